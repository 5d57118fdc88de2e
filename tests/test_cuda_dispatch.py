"""CPU versus CUDA for every op with a .cu twin, and the device dispatch of cnnkit.ops.

The device tests need a GPU, a CUDA build of cnnkit and CuPy; without them they are skipped with
cnnkit.cuda.status() as the reason. They were written on a machine with no GPU and have NOT run yet: the
first run on a GPU is their first run. Exact where the kernels promise it (ReLU, max-pool values and indices,
dropout masks and outputs), float32-accumulation tolerance for conv, 1e-6 relative for optimizer steps.
What always runs: the status reason, the no-cupy-at-import guarantee, and the dispatch and mixed-device
errors, using a stand-in class whose module name says "cupy".
"""
import itertools
import subprocess
import sys

import numpy as np
import pytest

import cnnkit
from cnnkit import _C, ops

needs_cuda = pytest.mark.skipif(not cnnkit.cuda.is_available(), reason=f"CUDA unavailable: {cnnkit.cuda.status()}")
FLOATS = [np.float32, np.float64]


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


# ---------------------------------------------------------------- runs everywhere

class FakeDeviceArray:
    """Looks like a CuPy array to the dispatcher (which only reads type(a).__module__)."""
    __module__ = "cupy._core.core"

    def __init__(self, shape=(1, 1, 4, 4)):
        self.shape = shape
        self.ndim = len(shape)
        self.dtype = np.dtype(np.float32)


def test_status_explains_why_cuda_is_unusable():
    status = cnnkit.cuda.status()
    if cnnkit.cuda.is_available():
        assert status == "ok"
    else:
        assert any(s in status for s in ("built without CUDA", "no CUDA device", "CuPy is not importable",
                                         "no CUDA kernels")), status


def test_importing_cnnkit_does_not_import_cupy():
    code = "import sys, cnnkit, cnnkit.ops; assert 'cupy' not in sys.modules, 'cupy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cuda_bindings_exist_exactly_when_built_with_cuda():
    names = ["conv2d_fwd_cuda", "conv2d_bwd_data_cuda", "conv2d_bwd_weight_cuda", "conv2d_bwd_bias_cuda",
             "maxpool2d_fwd_cuda", "maxpool2d_bwd_cuda", "dropout_fwd_cuda", "dropout_bwd_cuda", "relu_fwd_cuda",
             "relu_bwd_cuda", "sgd_step_cuda", "adagrad_step_cuda", "rmsprop_step_cuda", "adam_step_cuda",
             "grad_sumsq_cuda", "grad_scale_clamp_cuda", "maxnorm_rows_cuda"]
    built = cnnkit.build_info()["cuda"]
    assert [hasattr(_C, n) for n in names] == [built] * len(names)


@pytest.mark.skipif(cnnkit.cuda.is_available(), reason="CUDA is usable here: the refusal path cannot be reached")
@pytest.mark.parametrize("call", [
    lambda x: ops.relu_fwd(x),
    lambda x: ops.maxpool2d_fwd(x, 2),
    lambda x: ops.dropout_fwd(x, 0.5, 1),
    lambda x: ops.conv2d_fwd(x, x),
    lambda x: ops.matmul(x, x),
])
def test_device_arrays_without_cuda_raise_runtime_error_with_the_reason(call):
    with pytest.raises(RuntimeError, match="CUDA is not usable here: ") as e:
        call(FakeDeviceArray())
    assert cnnkit.cuda.status() in str(e.value)


def test_numpy_first_with_a_device_array_is_a_mixed_device_type_error():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(TypeError, match=r"conv2d_fwd: mixed devices: w is a cupy\.ndarray \(GPU\) but x is a "
                                        r"numpy\.ndarray \(CPU\)"):
        ops.conv2d_fwd(x, FakeDeviceArray())
    with pytest.raises(TypeError, match=r"relu_bwd: mixed devices: y is a cupy\.ndarray .* dy is a numpy"):
        ops.relu_bwd(x, FakeDeviceArray())
    with pytest.raises(TypeError, match=r"maxpool2d_bwd: mixed devices: indices is a cupy"):
        ops.maxpool2d_bwd(x, FakeDeviceArray(), (1, 1, 8, 8))


# ---------------------------------------------------------------- device tests (need a GPU)

def to_dev(cp, *arrays):
    return [cp.asarray(a) for a in arrays]


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
def test_relu_matches_cpu_exactly(cp, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 7, 9)).astype(dtype)
    x.flat[::17] = np.nan
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = ops.relu_fwd(x)
    dx = ops.relu_bwd(dy, y)
    xd, dyd = to_dev(cp, x, dy)
    yd = ops.relu_fwd(xd)
    assert isinstance(yd, cp.ndarray)
    np.testing.assert_array_equal(yd.get(), y)
    np.testing.assert_array_equal(ops.relu_bwd(dyd, yd).get(), dx)


POOL_CASES = [  # (shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 7), 3, 2, 1, 1, False),
    ((1, 2, 11, 10), 3, 2, 1, 2, True),
    ((2, 1, 7, 9), (2, 3), (1, 2), (1, 1), 1, True),
    ((1, 1, 5, 5), 3, 1, 1, 1, False),
]


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_values_and_indices_match_cpu_exactly(cp, dtype, case):
    shape, k, s, p, d, ceil = case
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, size=shape).astype(dtype)  # small integers: many ties
    x.flat[5::23] = np.nan
    x.flat[7::31] = -np.inf
    y, ind = ops.maxpool2d_fwd(x, k, s, p, d, ceil)
    yd, indd = ops.maxpool2d_fwd(cp.asarray(x), k, s, p, d, ceil)
    np.testing.assert_array_equal(yd.get(), y)
    np.testing.assert_array_equal(indd.get(), ind)
    assert indd.dtype == cp.int64
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = ops.maxpool2d_bwd(dy, ind, shape)
    dxd = ops.maxpool2d_bwd(cp.asarray(dy), indd, shape)
    # atomicAdd adds in no fixed order where windows share an argmax, so each cell of dx is held to the bound
    # for two sums of its m terms in different orders, (m - 1) * eps * sum|terms|, and is exact where m <= 1.
    planes, hw = shape[0] * shape[1], shape[2] * shape[3]
    cells = (np.arange(planes)[:, None] * hw + ind.reshape(planes, -1)).ravel()
    terms = np.bincount(cells, minlength=planes * hw)
    mass = np.bincount(cells, weights=np.abs(dy.astype(np.float64)).ravel(), minlength=planes * hw)
    bound = np.maximum(terms - 1, 0) * np.finfo(dtype).eps * mass
    err = np.abs(dxd.get().astype(np.float64) - dx).ravel()
    assert np.all(err <= bound), f"worst err/bound {np.max(err / np.where(bound > 0, bound, np.inf)):.3g}"


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [1, 3, 4, 5, 1027, 40000])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask_and_output_match_cpu_bit_for_bit(cp, dtype, n, p):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(n).astype(dtype)
    x[::97] = np.nan
    for seed, offset in [(0, 0), (123456789, 7), (2**64 - 1, 2**40 + 3)]:
        y, mask = ops.dropout_fwd(x, p, seed, offset)
        yd, maskd = ops.dropout_fwd(cp.asarray(x), p, seed, offset)
        np.testing.assert_array_equal(maskd.get(), mask)
        np.testing.assert_array_equal(yd.get(), y)
        dy = rng.standard_normal(n).astype(dtype)
        np.testing.assert_array_equal(ops.dropout_bwd(cp.asarray(dy), maskd, p).get(), ops.dropout_bwd(dy, mask, p))


CONV_CASES = [  # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1),
    ((2, 4, 9, 7), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((1, 6, 5, 5), (6, 1, 3, 3), 1, 1, 1, 6),          # depthwise
    ((3, 16, 12, 12), (70, 16, 1, 1), 1, 0, 1, 1),     # pointwise, K not a multiple of the 64 tile
    ((2, 8, 15, 13), (8, 4, 5, 5), 3, 2, 2, 2),
    ((4, 32, 16, 16), (64, 32, 3, 3), 1, 1, 1, 1),     # several tiles in every GEMM dimension
    ((8, 16, 32, 32), (16, 16, 3, 3), 1, 1, 1, 1),     # one output tile: the weight pass splits K 16 ways
]


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_passes_match_cpu(cp, dtype, case):
    xs, ws, s, p, d, g = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = ops.conv2d_fwd(x, w, b, s, p, d, g)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = ops.conv2d_bwd_data(dy, w, xs, s, p, d, g)
    dw0 = rng.standard_normal(ws).astype(dtype)
    dw = ops.conv2d_bwd_weight(dy, x, ws, s, p, d, g, out=dw0.copy(), accumulate=True)
    db = ops.conv2d_bwd_bias(dy)

    xd, wd, bd, dyd = to_dev(cp, x, w, b, dy)
    crs = ws[1] * ws[2] * ws[3]
    # float32: both sides accumulate in float32, in different orders; the error grows like sqrt(terms).
    tol = dict(rtol=1e-4, atol=1e-4 * np.sqrt(crs)) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ops.conv2d_fwd(xd, wd, bd, s, p, d, g).get(), y, **tol)
    np.testing.assert_allclose(ops.conv2d_fwd(xd, wd, None, s, p, d, g).get(), y - b[None, :, None, None], **tol)
    np.testing.assert_allclose(ops.conv2d_bwd_data(dyd, wd, xs, s, p, d, g).get(), dx, **tol)
    terms = y.shape[0] * y.shape[2] * y.shape[3]
    wtol = dict(rtol=1e-4, atol=1e-4 * np.sqrt(terms)) if dtype == np.float32 else tol
    dwd = ops.conv2d_bwd_weight(dyd, xd, ws, s, p, d, g, out=cp.asarray(dw0), accumulate=True)
    np.testing.assert_allclose(dwd.get(), dw, **wtol)
    np.testing.assert_allclose(ops.conv2d_bwd_weight(dyd, xd, ws, s, p, d, g).get(), dw - dw0, **wtol)
    np.testing.assert_allclose(ops.conv2d_bwd_bias(dyd).get(), db, rtol=1e-6, atol=1e-6)


@needs_cuda
def test_conv2d_on_a_non_default_stream(cp):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    want = ops.conv2d_fwd(x, w, padding=1)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        y = ops.conv2d_fwd(cp.asarray(x), cp.asarray(w), padding=1)
    stream.synchronize()
    np.testing.assert_allclose(y.get(), want, rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
def test_matmul_matches_cpu(cp, dtype):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((37, 19)).astype(dtype)
    b = rng.standard_normal((23, 19)).astype(dtype)
    c0 = rng.standard_normal((37, 23)).astype(dtype)
    want = ops.matmul(a, b, trans_b=True, out=c0.copy(), accumulate=True)
    got = ops.matmul(cp.asarray(a), cp.asarray(b), trans_b=True, out=cp.asarray(c0), accumulate=True)
    np.testing.assert_allclose(got.get(), want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


# ---- optimizer steps: the CUDA bindings against the CPU ones, same arguments ----

def _prep_cases():
    # (gscale, gclip, wd, l1): identity, coupled decay, clip by norm and value, L1
    return [(1.0, np.inf, 0.0, 0.0), (1.0, np.inf, 1e-2, 0.0), (0.5, 0.3, 0.0, 0.0), (1.0, np.inf, 1e-3, 1e-3)]


def _run_steps(cp, dtype, step_cpu, step_gpu, nstate, steps=5, n=10007):
    """Run `steps` updates on the CPU and the GPU from the same start; compare params and state."""
    rng = np.random.default_rng(6)
    p = rng.standard_normal(n).astype(dtype)
    state = [np.abs(rng.standard_normal(n)).astype(dtype) * 0.1 for _ in range(nstate)]
    state[0] += 1  # RMSProp centered: square_avg - grad_avg**2 stays positive (no NaN to compare)
    pd, sd = cp.asarray(p), [cp.asarray(s) for s in state]
    for t in range(steps):
        g = rng.standard_normal(n).astype(dtype)
        step_cpu(t, p, g, state)
        step_gpu(t, pd, cp.asarray(g), sd)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(pd.get(), p, rtol=rtol, atol=rtol)
    for a, b in zip(sd, state):
        np.testing.assert_allclose(a.get(), b, rtol=rtol, atol=rtol)


def _gpu():
    from cnnkit.ops import _cuda as _cuda_ops
    return _cuda_ops


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("prep", _prep_cases())
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_step_matches_cpu(cp, dtype, prep, momentum, nesterov):
    def step(mod):
        return lambda t, p, g, st: mod.sgd_step(p, g, st[0] if momentum else None, -0.1, momentum, 0.9, nesterov,
                                                t == 0, *prep)
    _run_steps(cp, dtype, step(_C), step(_gpu()), 1)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("prep", _prep_cases())
def test_adagrad_step_matches_cpu(cp, dtype, prep):
    def step(mod):
        return lambda t, p, g, st: mod.adagrad_step(p, g, st[0], -0.01 / (1 + t * 0.01), 1e-10, *prep)
    _run_steps(cp, dtype, step(_C), step(_gpu()), 1)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("prep", _prep_cases())
@pytest.mark.parametrize("centered,momentum", list(itertools.product([False, True], [0.0, 0.9])))
def test_rmsprop_step_matches_cpu(cp, dtype, prep, centered, momentum):
    def step(mod):
        return lambda t, p, g, st: mod.rmsprop_step(p, g, st[0], st[1] if centered else None,
                                                    st[2] if momentum else None, -0.01, 0.99, 1e-8, momentum, *prep)
    _run_steps(cp, dtype, step(_C), step(_gpu()), 3)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("prep", _prep_cases())
@pytest.mark.parametrize("amsgrad,decay", [(False, 1.0), (True, 1.0), (False, 1.0 - 1e-3 * 1e-2)])
def test_adam_step_matches_cpu(cp, dtype, prep, amsgrad, decay):
    b1, b2, lr = 0.9, 0.999, 1e-3

    def step(mod):
        def f(t, p, g, st):
            k = t + 1
            mod.adam_step(p, g, st[0], st[1], st[2] if amsgrad else None, b1, b2, 1e-8, -lr / (1 - b1**k),
                          (1 - b2**k) ** 0.5, decay, *prep)
        return f
    _run_steps(cp, dtype, step(_C), step(_gpu()), 3)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [0, 1, 255, 256, 100003, 3_000_001])
def test_grad_sumsq_and_clipping_match_cpu(cp, dtype, n):
    rng = np.random.default_rng(7)
    g = rng.standard_normal(n).astype(dtype)
    s, finite = _C.grad_sumsq(g)
    sd, finited = _gpu().grad_sumsq(cp.asarray(g))
    assert finited is True and finite is True
    assert sd == pytest.approx(s, rel=1e-12, abs=1e-12)
    if n:
        for bad in (np.nan, np.inf, -np.inf):
            h = g.copy()
            h[n // 2] = bad
            assert _gpu().grad_sumsq(cp.asarray(h))[1] is False
    gd = cp.asarray(g)
    _C.grad_scale_clamp(g, 0.7, 0.5)
    _gpu().grad_scale_clamp(gd, 0.7, 0.5)
    np.testing.assert_array_equal(gd.get(), g)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
def test_maxnorm_rows_matches_cpu(cp, dtype):
    rng = np.random.default_rng(8)
    p = (rng.standard_normal((33, 4, 3, 3)) * 3).astype(dtype)
    pd = cp.asarray(p)
    _C.maxnorm_rows(p, 2.0)
    _gpu().maxnorm_rows(pd, 2.0)
    np.testing.assert_allclose(pd.get(), p, rtol=1e-6 if dtype == np.float32 else 1e-13)


# ---- device-path argument errors ----

@needs_cuda
def test_device_first_with_a_numpy_array_is_a_mixed_device_type_error(cp):
    x = cp.zeros((1, 1, 4, 4), cp.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(TypeError, match=r"conv2d_fwd: mixed devices: x is a cupy\.ndarray \(GPU\) but w is a "
                                        r"numpy\.ndarray \(CPU\)"):
        ops.conv2d_fwd(x, w)
    with pytest.raises(TypeError, match=r"dropout_bwd: mixed devices: dy is a cupy\.ndarray .* mask is a numpy"):
        ops.dropout_bwd(cp.zeros(4, cp.float32), np.ones(4, np.uint8), 0.5)


@needs_cuda
def test_device_path_checks_dtype_layout_and_shape_like_the_cpu(cp):
    x = cp.zeros((2, 3, 8, 8), cp.float32)
    with pytest.raises(TypeError, match=r"conv2d_fwd: w must have the dtype of x"):
        ops.conv2d_fwd(x, cp.zeros((4, 3, 3, 3), cp.float64))
    with pytest.raises(TypeError, match=r"relu_fwd: x must be float32 or float64, got int32"):
        ops.relu_fwd(cp.zeros(3, cp.int32))
    with pytest.raises(ValueError, match=r"maxpool2d_fwd: x must be C-contiguous"):
        ops.maxpool2d_fwd(x.transpose(0, 1, 3, 2), 2)
    with pytest.raises(ValueError, match=r"conv2d_fwd: w.shape\[1\] must be C/groups"):
        ops.conv2d_fwd(x, cp.zeros((4, 2, 3, 3), cp.float32))
    with pytest.raises(ValueError, match=r"dropout_fwd: p \(the drop probability\) must be in \[0, 1\)"):
        ops.dropout_fwd(x, 1.0, 0)


@needs_cuda
def test_arrays_on_different_gpus_are_refused(cp):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cp.cuda.Device(0):
        x = cp.zeros((1, 1, 4, 4), cp.float32)
    with cp.cuda.Device(1):
        w = cp.zeros((1, 1, 3, 3), cp.float32)
    with pytest.raises(ValueError, match=r"conv2d_fwd: w is on GPU 1 but x is on GPU 0"):
        ops.conv2d_fwd(x, w)
