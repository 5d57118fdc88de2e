# relu: bad inputs (ops and _C), forward / backward against the reference over random shapes with NaN,
# +-inf and +-0 (hypothesis), a hand-worked vector, in-place and out=, float64 central differences away
# from the kink, N=0, bit-identical results at 1 and 2 threads, and torch.relu with autograd as oracle.
# Tests taking `device` run on the CPU, the CuPy stand-in and a GPU (tests/ops/conftest.py).
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cnnkit import _C, ops

from helpers import reference as R

F32, F64 = np.float32, np.float64

X = np.linspace(-1, 1, 24).reshape(2, 3, 4)
RO = np.zeros(X.shape)
RO.flags.writeable = False


# ---------------------------------------------------------------- 1. bad inputs

BAD = [
    ("x-list", lambda: ops.relu_fwd([1.0, -1.0]), TypeError, r"relu_fwd: x must be a numpy\.ndarray, got list"),
    ("x-int", lambda: ops.relu_fwd(np.arange(3)), TypeError, r"relu_fwd: x must be float32 or float64, got int64"),
    ("x-noncontig", lambda: ops.relu_fwd(X[:, ::2]), ValueError, r"relu_fwd: x must be C-contiguous"),
    ("out-readonly", lambda: ops.relu_fwd(X, out=RO), ValueError, r"relu_fwd: out must be writable"),
    ("out-noncontig", lambda: ops.relu_fwd(X, out=np.zeros((2, 3, 8))[..., ::2]), ValueError, r"relu_fwd: out must be C-contiguous"),
    ("out-shape", lambda: ops.relu_fwd(X, out=np.zeros((24,))), ValueError, r"relu_fwd: out must have shape \(2, 3, 4\), got \(24,\)"),
    ("out-dtype", lambda: ops.relu_fwd(X, out=np.zeros(X.shape, F32)), TypeError, r"relu_fwd: out must have dtype float64"),
    ("bwd-y-mixed", lambda: ops.relu_bwd(X, X.astype(F32)), TypeError, r"relu_bwd: y must have dtype float64 \(no silent casts\), got float32"),
    ("bwd-y-shape", lambda: ops.relu_bwd(X, X.reshape(6, 4)), ValueError, r"relu_bwd: y must have the shape of dy \(2, 3, 4\), got \(6, 4\)"),
    ("bwd-dy-int", lambda: ops.relu_bwd(np.arange(3), np.arange(3)), TypeError, r"relu_bwd: dy must be float32 or float64"),
    ("bwd-out-readonly", lambda: ops.relu_bwd(X, X, out=RO), ValueError, r"relu_bwd: out must be writable"),
    ("bwd-y-list", lambda: ops.relu_bwd(X, X.tolist()), TypeError, r"relu_bwd: y must be a numpy\.ndarray"),
]


@pytest.mark.parametrize("call, exc, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


C_BAD = [
    ("y-shape", lambda: _C.relu_fwd(X, np.empty((24,))), ValueError, r"relu_fwd: y must have the shape of x \(2, 3, 4\), got \(24,\)"),
    ("y-mixed", lambda: _C.relu_fwd(X, np.empty(X.shape, F32)), TypeError, r"relu_fwd: y must have dtype float64"),
    ("y-readonly", lambda: _C.relu_fwd(X, RO), ValueError, r"relu_fwd: y must be writable"),
    ("x-int", lambda: _C.relu_fwd(np.arange(3), np.empty(3)), TypeError, r"relu_fwd: x must be float32 or float64"),
    ("list", lambda: _C.relu_fwd([1.0], np.empty(1)), TypeError, r"incompatible function arguments"),
    ("bwd-dx-noncontig", lambda: _C.relu_bwd(X, X, np.empty((2, 3, 8))[..., ::2]), ValueError, r"relu_bwd: dx must be C-contiguous"),
]


@pytest.mark.parametrize("call, exc, match", [b[1:] for b in C_BAD], ids=[b[0] for b in C_BAD])
def test_C_checks_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- 2. forward and backward vs the reference

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0]


@settings(max_examples=100, deadline=None)
@given(shape=st.lists(st.integers(0, 9), min_size=1, max_size=4), dtype=st.sampled_from([F32, F64]),
       special=st.floats(0, 0.5), seed=st.integers(0, 2**32 - 1))
def test_relu_matches_reference(shape, dtype, special, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal(shape).astype(dtype)
    where = g.random(shape) < special
    x[where] = g.choice(np.array(SPECIALS, dtype), where.sum())
    y = ops.relu_fwd(x)
    np.testing.assert_array_equal(y, R.relu_fwd(x))
    assert y.dtype == dtype and not (np.signbit(y) & ~np.isnan(y) & (y != 0)).any()
    dy = g.standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(ops.relu_bwd(dy, y), R.relu_bwd(dy, y))


def test_hand_vector(device):
    x = device.asarray(np.array([-2.0, -0.0, 0.0, 1.5, np.nan, np.inf, -np.inf, 1e-300, -1e-300]))
    y = ops.relu_fwd(x)
    np.testing.assert_array_equal(device.host(y), [0, 0, 0, 1.5, np.nan, np.inf, 0, 1e-300, 0])
    dy = device.asarray(np.arange(1.0, 10.0))
    # dy passes where y > 0 or y is NaN (torch's threshold_backward on the output)
    np.testing.assert_array_equal(device.host(ops.relu_bwd(dy, y)), [0, 0, 0, 4, 5, 6, 0, 8, 0])


@pytest.mark.parametrize("dtype", [F32, F64])
def test_in_place_and_out(dtype, rng):
    x = rng.standard_normal((4, 5)).astype(dtype)
    want = np.maximum(x, 0)
    ptr = x.__array_interface__["data"][0]
    y = ops.relu_fwd(x, out=x)
    assert y.__array_interface__["data"][0] == ptr
    np.testing.assert_array_equal(x, want)
    dy = rng.standard_normal(x.shape).astype(dtype)
    out = np.full(x.shape, np.nan, dtype)
    dx = ops.relu_bwd(dy, x, out=out)
    assert dx.__array_interface__["data"][0] == out.__array_interface__["data"][0]
    np.testing.assert_array_equal(out, np.where(want > 0, dy, 0))


# ---------------------------------------------------------------- 3. central differences

def test_relu_central_differences(rng):
    x = rng.uniform(0.1, 2.0, (3, 4, 5)) * rng.choice([-1.0, 1.0], (3, 4, 5))  # |x| >= 0.1: away from the kink
    dy = rng.standard_normal(x.shape)
    num = R.numeric_grad(ops.relu_fwd, x, dy)
    np.testing.assert_allclose(ops.relu_bwd(dy, ops.relu_fwd(x)), num, rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------- zero-size batch and threads

@pytest.mark.parametrize("dtype", [F32, F64])
def test_zero_batch(device, dtype):
    x = device.asarray(np.zeros((0, 3, 4, 4), dtype))
    y = ops.relu_fwd(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert device.host(ops.relu_bwd(y, y)).shape == x.shape


@pytest.mark.parametrize("dtype", [F32, F64])
def test_bit_identical_at_1_and_2_threads(threads, dtype, rng):
    x = rng.standard_normal(1_000_003).astype(dtype)
    x[::97] = np.nan
    x[::89] = -0.0
    dy = rng.standard_normal(x.shape).astype(dtype)
    results = []
    for n in (1, 2, 1):
        threads(n)
        y = ops.relu_fwd(x)
        results.append((y.tobytes(), ops.relu_bwd(dy, y).tobytes()))
    assert results[0] == results[1] == results[2]


# ---------------------------------------------------------------- PyTorch as the outside oracle

@pytest.mark.parametrize("dtype", [F32, F64])
def test_relu_matches_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 7, 5)).astype(dtype)
    x.reshape(-1)[::11] = np.nan
    x.reshape(-1)[::13] = np.inf
    x.reshape(-1)[::17] = -np.inf
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.relu(tx)
    dy = rng.standard_normal(x.shape).astype(dtype)
    ty.backward(torch.from_numpy(dy))
    y = ops.relu_fwd(x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(ops.relu_bwd(dy, y), tx.grad.numpy())


# ---------------------------------------------------------------- on each device (tests/ops/conftest.py)

@pytest.mark.parametrize("dtype", [F32, F64])
def test_relu_on_each_device_matches_the_cpu_exactly(device, dtype):
    # the CPU against the reference; the stand-in and a GPU against the CPU; bit for bit everywhere
    want_fwd, want_bwd = (R.relu_fwd, R.relu_bwd) if device.name == "cpu" else (ops.relu_fwd, ops.relu_bwd)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 7, 9)).astype(dtype)
    x.flat[::17] = np.nan
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = want_fwd(x)
    dx = want_bwd(dy, y)
    xd, dyd = device.asarray(x), device.asarray(dy)
    yd = ops.relu_fwd(xd)
    np.testing.assert_array_equal(device.host(yd), y)   # host() asserts that yd is on the device
    np.testing.assert_array_equal(device.host(ops.relu_bwd(dyd, yd)), dx)
