"""Preprocessing fitted on train, applied to val/test, saved and restored; whitening really whitens."""
import json

import numpy as np
import pytest

from cnnkit import data as D


def images(n=400, shape=(2, 3, 3), seed=0):
    rng = np.random.default_rng(seed)
    D_ = int(np.prod(shape))
    mix = rng.standard_normal((D_, D_))  # correlated features
    return (rng.standard_normal((n, D_)) @ mix + 3.0).reshape((n,) + shape).astype(np.float64)


def roundtrip(p):
    s = p.state_dict()
    s2 = {"kind": s["kind"], "params": json.loads(json.dumps(s["params"])),
          "arrays": {k: np.array(v) for k, v in s["arrays"].items()}}
    return D.load_preprocessor(s2)


def test_mean_image_and_channel_stats():
    x, v = images(), images(50, seed=1)
    m = D.MeanImage().fit(x)
    np.testing.assert_allclose(m(v), v - x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m(x).mean(axis=0), 0, atol=1e-12)
    c = D.ChannelMean().fit(x)
    np.testing.assert_allclose(c(v), v - x.mean(axis=(0, 2, 3))[None, :, None, None], rtol=1e-12)
    s = D.ChannelStandardize().fit(x)
    z = s(x)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, rtol=1e-12)
    for p in (m, c, s):
        np.testing.assert_array_equal(roundtrip(p)(v), p(v))


def test_float32_in_float32_out():
    x = images().astype(np.float32)
    y = D.ChannelStandardize().fit_transform(x)
    assert y.dtype == np.float32 and y.flags.c_contiguous


@pytest.mark.parametrize("cls", [D.PCAWhiten, D.ZCAWhiten])
def test_whitening_whitens(cls):
    x = images(2000)
    w = cls(epsilon=1e-8).fit(x)
    z = w(x).reshape(len(x), -1)
    cov = z.T @ z / len(z)
    assert np.abs(cov - np.eye(cov.shape[0])).max() < 1e-3
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    v = images(30, seed=2)
    np.testing.assert_allclose(roundtrip(w)(v), w(v), rtol=1e-12, atol=1e-12)


def test_pca_and_zca_shapes_and_relation():
    x = images(500)
    pca = D.PCAWhiten(epsilon=1e-5, n_components=5).fit(x)
    assert pca(x).shape == (500, 5)
    zca = D.ZCAWhiten(epsilon=1e-5).fit(x)
    z = zca(x)
    assert z.shape == x.shape
    full = D.PCAWhiten(epsilon=1e-5).fit(x)(x)
    np.testing.assert_allclose(z.reshape(500, -1), full @ zca.eigvec.T, rtol=1e-9, atol=1e-9)
    # epsilon shrinks the low-variance directions: the whitened variance is S / (S + eps)
    big = D.ZCAWhiten(epsilon=10.0).fit(x)
    assert np.trace(np.cov(big(x).reshape(500, -1).T, bias=True)) < 18 - 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="call fit"):
        D.MeanImage()(images())
    m = D.MeanImage().fit(images())
    with pytest.raises(ValueError, match=r"x must be \(N, 2, 3, 3\) as at fit time, got \(4, 2, 3, 4\)"):
        m(np.zeros((4, 2, 3, 4)))
    with pytest.raises(TypeError, match="MeanImage.fit: x must be float32 or float64"):
        D.MeanImage().fit(np.zeros((4, 2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        D.ZCAWhiten(epsilon=-1)
    with pytest.raises(ValueError, match="singular"):
        D.ZCAWhiten(epsilon=0).fit(images(5))
    with pytest.raises(ValueError, match="constant"):
        D.ChannelStandardize().fit(np.ones((3, 2, 2, 2)))
    with pytest.raises(ValueError, match="unknown kind"):
        D.load_preprocessor({"kind": "nope", "params": {}, "arrays": {}})
