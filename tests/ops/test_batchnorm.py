# The BatchNorm kernels behind ck.BatchNorm1d/2d (the layers are checked against torch in test_layers.py):
# statistics, the per-channel affine transform and the backward against numpy in float64, bad inputs, and
# the same bits at 1 and 2 threads.
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
