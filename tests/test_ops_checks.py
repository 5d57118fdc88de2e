"""Argument checks shared by every kernel binding (csrc/bindings.cpp) and the ops wrappers (cnnkit.ops):
dtypes compared by value, buffer alignment, out= aliasing and real-bool flags."""
import pickle

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import _C
from cnnkit import data as D
from cnnkit import ops


def _pickled(a):
    """`a` after a pickle round trip: equal dtype, but a dtype object that is not numpy's cached one."""
    b = pickle.loads(pickle.dumps(a))
    assert b.dtype == a.dtype
    return b


# ---------------------------------------------------------------- dtypes compare by value


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pickled_arrays_go_through_every_kernel_family(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    px, pw = _pickled(x), _pickled(w)

    np.testing.assert_array_equal(ops.conv2d_fwd(px, pw, _pickled(np.ones(4, dtype))),
                                  ops.conv2d_fwd(x, w, np.ones(4, dtype)))
    dy = rng.standard_normal((2, 4, 4, 4)).astype(dtype)
    np.testing.assert_array_equal(ops.conv2d_bwd_data(_pickled(dy), pw, x.shape), ops.conv2d_bwd_data(dy, w, x.shape))
    np.testing.assert_array_equal(ops.conv2d_bwd_weight(_pickled(dy), px, w.shape),
                                  ops.conv2d_bwd_weight(dy, x, w.shape))
    np.testing.assert_array_equal(ops.conv2d_bwd_bias(_pickled(dy)), ops.conv2d_bwd_bias(dy))

    a, b = rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal((5, 2)).astype(dtype)
    np.testing.assert_allclose(ops.matmul(_pickled(a), _pickled(b)), a @ b, rtol=1e-5)

    np.testing.assert_array_equal(ops.relu_fwd(px), np.maximum(x, 0))
    np.testing.assert_array_equal(ops.relu_bwd(px, _pickled(np.maximum(x, 0))), np.where(x > 0, x, 0))

    y, idx = ops.maxpool2d_fwd(px, 2)
    np.testing.assert_array_equal(y, x.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    np.testing.assert_array_equal(ops.maxpool2d_bwd(_pickled(y), _pickled(idx), x.shape),
                                  ops.maxpool2d_bwd(y, idx, x.shape))

    yd, mask = ops.dropout_fwd(px, 0.5, seed=3)
    np.testing.assert_array_equal((yd, mask), ops.dropout_fwd(x, 0.5, seed=3))
    np.testing.assert_array_equal(ops.dropout_bwd(_pickled(yd), _pickled(mask), 0.5), ops.dropout_bwd(yd, mask, 0.5))

    mean, var = ops.batchnorm_stats(px)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, x.var(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    alpha, beta = np.full(3, 2, dtype), np.full(3, 1, dtype)
    np.testing.assert_array_equal(ops.channel_affine(px, _pickled(alpha), _pickled(beta)), x * 2 + 1)
    invstd = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    ref = ops.batchnorm_bwd(x, x, mean, invstd)
    got = ops.batchnorm_bwd(px, px, _pickled(mean), _pickled(invstd), weight=_pickled(np.ones(3, dtype)))
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-6)


def test_pickled_arrays_through_direct_bindings():
    x = _pickled(np.zeros((1, 1, 4, 4), np.float32))
    y = np.empty((2, 1, 2, 2), np.float32).reshape(1, 2, 2, 2)
    _C.conv2d_fwd(x, _pickled(np.ones((2, 1, 3, 3), np.float32)), None, y, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_array_equal(y, 0)
    keys = _pickled(np.zeros(4, np.uint64))
    _C.philox_keys(keys, 1, 0, 0)
    assert keys.any()


@pytest.mark.parametrize("cls, kw", [(ck.optim.SGD, dict(lr=0.5)), (ck.optim.SGD, dict(lr=0.5, momentum=0.9)),
                                     (ck.optim.Adam, dict(lr=0.1))])
def test_pickled_parameter_takes_an_optimizer_step(cls, kw):
    p = ck.Parameter(_pickled(np.array([1.0, -2.0, 3.0], np.float32)))
    opt = cls([p], **kw)
    p.grad[...] = _pickled(np.array([1.0, 1.0, -1.0], np.float32))
    opt.step()
    if cls is ck.optim.SGD:
        np.testing.assert_allclose(p.data, [0.5, -2.5, 3.5], rtol=1e-6)
    else:
        np.testing.assert_allclose(p.data, [0.9, -2.1, 3.1], rtol=1e-5)


def test_pickled_batch_goes_through_augment():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    np.testing.assert_array_equal(D.RandomHorizontalFlip(1.0)(_pickled(x)), x[:, :, :, ::-1])
    y = D.RandomCrop(4, padding=0)(_pickled(x), seed=1)
    np.testing.assert_array_equal(y, x)
