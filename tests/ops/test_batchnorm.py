# The BatchNorm kernels behind ck.BatchNorm1d/2d (the layers are checked against torch in test_layers.py):
# statistics, the per-channel affine transform and the backward against numpy in float64, bad inputs, and
# the same bits at 1 and 2 threads. Tests taking `device` run on the CPU, the CuPy stand-in and a GPU
# (tests/ops/conftest.py).
import numpy as np
import pytest

import cnnkit as ck
from cnnkit import ops


@pytest.mark.parametrize("shape", [(4, 3), (5, 2, 7), (3, 4, 5, 6), (2, 1, 1, 1)])
def test_stats_affine_and_backward_match_numpy(shape, rng):
    x = rng.standard_normal(shape) * 3 + 1
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = ops.batchnorm_stats(x)
    np.testing.assert_allclose(mean, x.mean(axis=axes), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(var, x.var(axis=axes), rtol=1e-12, atol=1e-13)
    C = shape[1]
    b = (1, C) + (1,) * (x.ndim - 2)
    alpha, beta = rng.standard_normal(C), rng.standard_normal(C)
    np.testing.assert_allclose(ops.channel_affine(x, alpha, beta), x * alpha.reshape(b) + beta.reshape(b), rtol=1e-14)
    dy = rng.standard_normal(shape)
    invstd = 1 / np.sqrt(var + 1e-5)
    w = rng.standard_normal(C)
    xhat = (x - mean.reshape(b)) * invstd.reshape(b)
    for train in (True, False):
        dx, sum_dy, dotp = ops.batchnorm_bwd(dy, x, mean, invstd, w, train=train)
        np.testing.assert_allclose(sum_dy, dy.sum(axis=axes), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dotp * invstd, (dy * xhat).sum(axis=axes), rtol=1e-12, atol=1e-12)
        g = dy * w.reshape(b)
        want = ((g - g.mean(axis=axes).reshape(b) - xhat * (g * xhat).mean(axis=axes).reshape(b)) * invstd.reshape(b)
                if train else g * invstd.reshape(b))
        np.testing.assert_allclose(dx, want, rtol=1e-10, atol=1e-12)
    dx, _, _ = ops.batchnorm_bwd(dy, x, mean, invstd, None, need_dx=True)   # affine=False: weight 1
    assert dx.shape == x.shape
    assert ops.batchnorm_bwd(dy, x, mean, invstd, w, need_dx=False)[0] is None


def test_same_bits_at_1_and_2_threads(rng):
    x = rng.standard_normal((32, 16, 24, 24)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    saved = ck.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            ck.set_num_threads(n)
            mean, var = ops.batchnorm_stats(x)
            invstd = (1 / np.sqrt(var + 1e-5)).astype(np.float32)
            out.append((mean, var, *ops.batchnorm_bwd(dy, x, mean, invstd, None)))
    finally:
        ck.set_num_threads(saved)
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call,err,match", [
    (lambda: ops.batchnorm_stats(np.ones(5)), ValueError, r"batchnorm_stats: x must be 2-D, 3-D or 4-D"),
    (lambda: ops.batchnorm_stats(np.ones((2, 3), np.int32)), TypeError, r"batchnorm_stats: x must be float32"),
    (lambda: ops.channel_affine(np.ones((2, 3)), np.ones(3, np.float32), np.ones(3)), TypeError,
     r"channel_affine: alpha must have dtype float64"),
    (lambda: ops.channel_affine(np.ones((2, 3)), np.ones(4), np.ones(3)), ValueError, r"channel_affine: alpha must have shape \(3,\)"),
    (lambda: ops.batchnorm_bwd(np.ones((2, 4)), np.ones((2, 3)), np.ones(3), np.ones(3)), ValueError,
     r"batchnorm_bwd: dy must have the shape of x"),
    (lambda: ops.batchnorm_bwd(np.ones((2, 3), np.float32), np.ones((2, 3)), np.ones(3), np.ones(3)), TypeError,
     r"batchnorm_bwd: dy must have dtype float64"),
    (lambda: ops.batchnorm_stats(np.ones((2, 3, 4)).transpose(0, 2, 1)), ValueError, r"batchnorm_stats: x must be C-contiguous"),
])
def test_bad_inputs(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ---------------------------------------------------------------- on each device (tests/ops/conftest.py)

def rnd(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _numpy_bn_bwd(dy, x, mean, invstd, weight, train):
    """batchnorm_bwd's (dx, sum_dy, dotp) in float64 numpy, from the formulas."""
    axes, b = (0,) + tuple(range(2, x.ndim)), (1, x.shape[1]) + (1,) * (x.ndim - 2)
    dy, xc = dy.astype(np.float64), x.astype(np.float64) - mean.reshape(b)
    inv = invstd.astype(np.float64).reshape(b)
    g = dy * weight.reshape(b) if weight is not None else dy
    xhat = xc * inv
    dx = (g - g.mean(axis=axes).reshape(b) - xhat * (g * xhat).mean(axis=axes).reshape(b)) * inv if train else g * inv
    return dx, dy.sum(axis=axes), (dy * xc).sum(axis=axes)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_batchnorm_ops_on_each_device_equal_the_cpu(device, shape, dtype, rtol):
    # BatchNorm runs on CuPy reductions on a GPU (and on the stand-in) and on a fused C++ kernel (float64
    # moments) on the CPU: the same formulas summed in another order, so float32 rounding apart. On the CPU
    # the kernels are compared with the formulas in float64 numpy.
    x = rnd(*shape, seed=1, dtype=dtype) * 3 + 1
    dy = rnd(*shape, seed=2, dtype=dtype)
    C = shape[1]
    axes, bshape = (0,) + tuple(range(2, x.ndim)), (1, C) + (1,) * (x.ndim - 2)
    w, alpha, beta = (rnd(C, seed=s, dtype=dtype) for s in (3, 4, 5))
    dx_ = device.asarray(x)
    mean, var = ck.ops.batchnorm_stats(x)
    want_mean, want_var = (x.astype(np.float64).mean(axis=axes), x.astype(np.float64).var(axis=axes)) \
        if device.name == "cpu" else (mean, var)
    dmean, dvar = ck.ops.batchnorm_stats(dx_)
    assert dmean.dtype == dtype and dvar.dtype == dtype
    np.testing.assert_allclose(device.host(dmean), want_mean, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(device.host(dvar), want_var, rtol=rtol)

    y = ck.ops.channel_affine(dx_, device.asarray(alpha), device.asarray(beta))
    want = x * alpha.reshape(bshape) + beta.reshape(bshape) if device.name == "cpu" else \
        ck.ops.channel_affine(x, alpha, beta)
    np.testing.assert_allclose(device.host(y), want, rtol=rtol, atol=rtol)
    z = device.asarray(x)
    assert ck.ops.channel_affine(z, device.asarray(alpha), device.asarray(beta), out=z) is z

    invstd = (1 / np.sqrt(var + dtype(1e-5))).astype(dtype)
    for weight in (w, None):
        for train in (True, False):
            want = _numpy_bn_bwd(dy, x, mean, invstd, weight, train) if device.name == "cpu" else \
                ck.ops.batchnorm_bwd(dy, x, mean, invstd, weight, train)
            got = ck.ops.batchnorm_bwd(device.asarray(dy), dx_, device.asarray(mean), device.asarray(invstd),
                                       None if weight is None else device.asarray(weight), train)
            assert got[1].dtype == np.float64 and got[2].dtype == np.float64
            for g, c in zip(got, want):
                np.testing.assert_allclose(device.host(g), c, rtol=rtol * 10, atol=rtol * 10)
    assert ck.ops.batchnorm_bwd(device.asarray(dy), dx_, device.asarray(mean), device.asarray(invstd),
                                need_dx=False)[0] is None


def test_batchnorm_ops_on_each_device_check_like_the_cpu(device):
    x = device.asarray(rnd(2, 3, 4, seed=1))
    if device.name != "cpu":
        with pytest.raises(TypeError, match=r"channel_affine: mixed devices: x is a cupy\.ndarray \(GPU\) but alpha "
                                            r"is a numpy\.ndarray"):
            ck.ops.channel_affine(x, np.ones(3, np.float32), device.asarray(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match=r"channel_affine: alpha must have shape \(3,\), got \(2,\)"):
        ck.ops.channel_affine(x, device.asarray(np.ones(2, np.float32)), device.asarray(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match=r"batchnorm_bwd: dy must have the shape of x \(2, 3, 4\), got \(2, 3, 2\)"):
        m = device.asarray(np.ones(3, np.float32))
        ck.ops.batchnorm_bwd(device.asarray(rnd(2, 3, 2)), x, m, m)
    lib = "numpy" if device.name == "cpu" else "cupy"
    with pytest.raises(ValueError, match=rf"batchnorm_stats: x must be C-contiguous .*{lib}\.ascontiguousarray"):
        ck.ops.batchnorm_stats(device.asarray(rnd(3, 2, 4)).transpose(1, 0, 2))
