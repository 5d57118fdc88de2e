# cnnkit.ops.matmul: the threaded GEMM that Linear layers use. Bad inputs, numpy reference over odd shapes
# and every transpose combination, accumulate, results independent of the thread count, and torch.
# Tests taking `device` run on the CPU, the CuPy stand-in and a GPU (tests/ops/conftest.py).
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import cnnkit as ck
from cnnkit import ops

F32, F64 = np.float32, np.float64


def _operands(rng, M, N, K, ta, tb, dtype):
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    ref = (a.T if ta else a).astype(F64) @ (b.T if tb else b).astype(F64)
    return a, b, ref


@settings(max_examples=60, deadline=None)
@given(M=st.integers(0, 70), N=st.integers(0, 70), K=st.integers(0, 40), ta=st.booleans(), tb=st.booleans(),
       dtype=st.sampled_from([F32, F64]), seed=st.integers(0, 2**16))
def test_matmul_matches_numpy(M, N, K, ta, tb, dtype, seed):
    a, b, ref = _operands(np.random.default_rng(seed), M, N, K, ta, tb, dtype)
    c = ops.matmul(a, b, trans_a=ta, trans_b=tb)
    assert c.shape == (M, N) and c.dtype == dtype
    tol = (1e-5 if dtype == F32 else 1e-13) * np.sqrt(max(K, 1)) * 4
    np.testing.assert_allclose(c, ref, rtol=0, atol=tol * max(1.0, np.abs(ref).max(initial=0)))


def test_matmul_hand_worked(device):
    a = device.asarray(np.array([[1, 2], [3, 4]], F64))
    b = device.asarray(np.array([[5, 6], [7, 8]], F64))
    np.testing.assert_array_equal(device.host(ops.matmul(a, b)), [[19, 22], [43, 50]])
    np.testing.assert_array_equal(device.host(ops.matmul(a, b, trans_a=True)), [[26, 30], [38, 44]])
    np.testing.assert_array_equal(device.host(ops.matmul(a, b, trans_b=True)), [[17, 23], [39, 53]])


def test_matmul_accumulates_into_out(rng):
    a, b, ref = _operands(rng, 33, 47, 19, False, True, F64)
    out = np.full((33, 47), 2.0)
    got = ops.matmul(a, b, trans_b=True, out=out, accumulate=True)
    assert got is out
    np.testing.assert_allclose(out, ref + 2.0, rtol=1e-12, atol=1e-12)
    ops.matmul(a, b, trans_b=True, out=out)  # without accumulate: overwritten
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_matmul_k0_writes_zeros(device):
    out = device.asarray(np.ones((3, 4), F32))
    ops.matmul(device.asarray(np.empty((3, 0), F32)), device.asarray(np.empty((0, 4), F32)), out=out)
    np.testing.assert_array_equal(device.host(out), 0)


@pytest.mark.parametrize("shape", [(256, 10, 2048), (10, 256, 2048), (128, 4096, 64)])
def test_matmul_deterministic_per_thread_count(shape, rng):
    # The output is split into one block per thread, and OpenBLAS may take a different micro-kernel path
    # for a different block size, so bits can differ between thread counts (like PyTorch's). For a given
    # thread count every call gives the same bits, and the counts agree to float32 accumulation error.
    M, N, K = shape
    a, b, ref = _operands(rng, M, N, K, False, True, F32)
    saved = ck.get_num_threads()
    try:
        ck.set_num_threads(1)
        one = ops.matmul(a, b, trans_b=True)
        np.testing.assert_array_equal(one, ops.matmul(a, b, trans_b=True))
        ck.set_num_threads(2)
        two = ops.matmul(a, b, trans_b=True)
        np.testing.assert_array_equal(two, ops.matmul(a, b, trans_b=True))
    finally:
        ck.set_num_threads(saved)
    tol = 1e-5 * np.sqrt(K) * 4 * np.abs(ref).max()
    np.testing.assert_allclose(one, ref, rtol=0, atol=tol)
    np.testing.assert_allclose(two, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("args,kwargs,err,match", [
    ((np.ones((2, 3), F32), np.ones((4, 5), F32)), {}, ValueError, r"matmul: inner dimensions differ"),
    ((np.ones((2, 3), F32), np.ones((3, 5), F64)), {}, TypeError, r"matmul: b must have the dtype of a"),
    ((np.ones((2, 3), np.int64), np.ones((3, 5), np.int64)), {}, TypeError, r"matmul: a must be float32 or float64"),
    ((np.ones((2, 3, 1), F32), np.ones((3, 5), F32)), {}, ValueError, r"matmul: a must be 2-D"),
    ((np.ones((3, 2), F32).T, np.ones((3, 5), F32)), {}, ValueError, r"matmul: a must be C-contiguous"),
    (([[1.0]], np.ones((1, 1), F32)), {}, TypeError, r"matmul: a must be a numpy.ndarray"),
    ((np.ones((2, 3), F32), np.ones((3, 5), F32)), {"out": np.ones((5, 2), F32)}, ValueError,
     r"matmul: out must have shape \(2, 5\)"),
    ((np.ones((2, 3), F32), np.ones((3, 5), F32)), {"accumulate": True}, ValueError, r"matmul: accumulate=True needs out="),
])
def test_matmul_bad_inputs(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        ops.matmul(*args, **kwargs)


def test_matmul_read_only_out_and_raw_checks():
    ro = np.zeros((2, 5), F32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="matmul: out must be writable"):
        ops.matmul(np.ones((2, 3), F32), np.ones((3, 5), F32), out=ro)
    # The C++ checks on their own (bypassing ops): wrong inner size, wrong out dtype.
    with pytest.raises(ValueError, match="matmul: inner dimensions differ"):
        ck._C.matmul(np.ones((2, 3), F32), np.ones((4, 5), F32), np.empty((2, 5), F32), False, False, False)
    with pytest.raises(TypeError, match="matmul: out must have dtype float32"):
        ck._C.matmul(np.ones((2, 3), F32), np.ones((3, 5), F32), np.empty((2, 5), F64), False, False, False)


def test_matmul_matches_torch_linear(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((128, 2048)).astype(F32)
    w = rng.standard_normal((256, 2048)).astype(F32)
    ref = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    got = ops.matmul(x, w, trans_b=True)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# ---------------------------------------------------------------- on each device (tests/ops/conftest.py)

@pytest.mark.parametrize("dtype", [F32, F64])
def test_matmul_on_each_device_matches_the_cpu(device, dtype):
    # the CPU against numpy in float64, a GPU (cuBLAS) against the CPU, the stand-in bit for bit
    rng = np.random.default_rng(5)
    a = rng.standard_normal((37, 19)).astype(dtype)
    b = rng.standard_normal((23, 19)).astype(dtype)
    c0 = rng.standard_normal((37, 23)).astype(dtype)
    if device.name == "cpu":
        want = a.astype(F64) @ b.T.astype(F64) + c0
    else:
        want = ops.matmul(a, b, trans_b=True, out=c0.copy(), accumulate=True)
    got = ops.matmul(device.asarray(a), device.asarray(b), trans_b=True, out=device.asarray(c0), accumulate=True)
    if device.name == "fakecupy":
        np.testing.assert_array_equal(device.host(got), want)
    np.testing.assert_allclose(device.host(got), want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
