"""Live augmentation (cnnkit.data.transforms): each kernel against a numpy reference given the parameters it
drew (exact for flips and crops, 1e-5 for colour and affine), the draws against a pure-Python Philox, and
determinism across thread counts."""
import itertools
import math

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import data as D


# ---------------------------------------------------------------- pure-Python Philox-4x32-10 (the spec)

def philox(c, k):
    c, k = list(c), list(k)
    M = 0xFFFFFFFF
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & M, p1 & M, ((p0 >> 32) ^ c[3] ^ k[1]) & M, p0 & M]
        k = [(k[0] + 0x9E3779B9) & M, (k[1] + 0xBB67AE85) & M]
    return c


def stream_words(seed, epoch, stream, sid, count):
    out = []
    for block in range((count + 3) // 4):
        out += philox([sid & 0xFFFFFFFF, sid >> 32, epoch, (stream << 8) | block],
                      [seed & 0xFFFFFFFF, seed >> 32])
    return out[:count]


def test_philox_known_answer():
    # Random123's published known-answer vector for philox4x32_10 (counter 0, key 0).
    assert philox([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- flips and crops: exact

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hflip_matches_numpy_and_philox(dtype):
    x = rand((40, 3, 5, 7), 1, dtype)
    ids = np.arange(100, 140, dtype=np.int64)
    y, flipped = D.RandomHorizontalFlip(0.5)(x, ids=ids, epoch=3, seed=12345, return_params=True)
    ref = np.where(flipped[:, None, None, None].astype(bool), x[:, :, :, ::-1], x)
    np.testing.assert_array_equal(y, ref)
    # the decision is word 0 of the sample's stream (kind 1, stream 0): flip iff u < p
    for n, sid in enumerate(ids):
        u = stream_words(12345, 3, 1, int(sid), 1)[0] * 2.0**-32
        assert bool(flipped[n]) == (u < 0.5)
    assert 5 < flipped.sum() < 35


def test_hflip_p_edges():
    x = rand((8, 1, 3, 4))
    np.testing.assert_array_equal(D.RandomHorizontalFlip(0.0)(x), x)
    np.testing.assert_array_equal(D.RandomHorizontalFlip(1.0)(x), x[:, :, :, ::-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size,pad", [((5, 7), 2), ((3, 4), 0), ((9, 11), 3), ((1, 1), 1)])
def test_random_crop_matches_numpy(dtype, size, pad):
    x = rand((30, 2, 5, 7), 2, dtype)
    ids = np.arange(30, dtype=np.int64) * 7
    y, off = D.RandomCrop(size, padding=pad)(x, ids=ids, epoch=1, seed=9, return_params=True)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    P, Q = size
    assert y.shape == (30, 2, P, Q) and y.dtype == dtype
    for n in range(30):
        oy, ox = off[n]
        assert 0 <= oy <= 5 + 2 * pad - P and 0 <= ox <= 7 + 2 * pad - Q
        np.testing.assert_array_equal(y[n], xp[n, :, oy:oy + P, ox:ox + Q])
    # offsets: oy = floor(u0 * range), ox = floor(u1 * range) from the Philox words (kind 2)
    for n in range(30):
        w = stream_words(9, 1, 2, int(ids[n]), 2)
        assert off[n, 0] == (w[0] * (5 + 2 * pad - P + 1)) >> 32
        assert off[n, 1] == (w[1] * (7 + 2 * pad - Q + 1)) >> 32


def test_random_crop_covers_every_offset():
    x = rand((2000, 1, 4, 4))
    _, off = D.RandomCrop(4, padding=2)(x, return_params=True)
    assert set(map(tuple, off)) == set(itertools.product(range(5), range(5)))


def test_center_crop_and_ten_crop():
    x = rand((3, 2, 6, 7))
    np.testing.assert_array_equal(D.CenterCrop((4, 4))(x), x[:, :, 1:5, 1:5])
    views = D.ten_crop(x, (4, 5))
    assert len(views) == 10
    np.testing.assert_array_equal(views[0], x[:, :, :4, :5])
    np.testing.assert_array_equal(views[1], x[:, :, :4, 2:])
    np.testing.assert_array_equal(views[2], x[:, :, 2:, :5])
    np.testing.assert_array_equal(views[3], x[:, :, 2:, 2:])
    np.testing.assert_array_equal(views[4], x[:, :, 1:5, 1:6])
    for k in range(5):
        np.testing.assert_array_equal(views[5 + k], views[k][:, :, :, ::-1])


def test_tta_predict_averages_views():
    x = rand((4, 1, 6, 6))
    seen = []

    def predict(v):
        seen.append(v.copy())
        return np.stack([v.sum(axis=(1, 2, 3)), v[:, 0, 0, 0]], axis=1)

    s = D.tta_predict(predict, x, size=4)
    assert len(seen) == 10
    ref = np.mean([predict(v).astype(np.float64) for v in D.ten_crop(x, 4)], axis=0)
    np.testing.assert_allclose(s, ref, rtol=1e-12)
    s2 = D.tta_predict(predict, x)  # flips only
    np.testing.assert_allclose(s2, (predict(x).astype(np.float64) + predict(np.ascontiguousarray(x[..., ::-1]))) / 2,
                               rtol=1e-12)
    p = D.tta_predict(predict, x, size=4, flip=False, average="softmax")
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="average"):
        D.tta_predict(predict, x, average="max")
    with pytest.raises(TypeError, match="predict"):
        D.tta_predict(None, x)


# ---------------------------------------------------------------- bilinear: resized crop and affine

def resize_ref(img, top, left, h, w, P, Q):
    """torch's upsample_bilinear2d (align_corners=False) of img[:, top:top+h, left:left+w], in float64."""
    def taps(out, n):
        res = []
        for o in range(out):
            s = max((o + 0.5) * n / out - 0.5, 0.0)
            i0 = min(int(s), n - 1)
            res.append((i0, min(i0 + 1, n - 1), s - i0))
        return res
    crop = img[:, top:top + h, left:left + w].astype(np.float64)
    out = np.empty((img.shape[0], P, Q))
    for i, (a0, a1, wa) in enumerate(taps(P, h)):
        for j, (b0, b1, wb) in enumerate(taps(Q, w)):
            out[:, i, j] = ((1 - wa) * ((1 - wb) * crop[:, a0, b0] + wb * crop[:, a0, b1])
                            + wa * ((1 - wb) * crop[:, a1, b0] + wb * crop[:, a1, b1]))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [(6, 6), (5, 9), (13, 4)])
def test_random_resized_crop_matches_reference(dtype, size):
    x = rand((24, 3, 10, 12), 3, dtype)
    t = D.RandomResizedCrop(size, scale=(0.2, 1.0))
    y, boxes = t(x, seed=4, epoch=2, return_params=True)
    for n in range(24):
        top, left, h, w = boxes[n]
        assert 0 <= top and top + h <= 10 and 0 <= left and left + w <= 12 and h > 0 and w > 0
        np.testing.assert_allclose(y[n], resize_ref(x[n], top, left, h, w, *size), rtol=1e-5, atol=1e-5)
    assert len({tuple(b) for b in boxes}) > 12  # really random


def test_random_resized_crop_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    x = rand((16, 3, 11, 9), 5)
    y, boxes = D.RandomResizedCrop((7, 8), scale=(0.3, 1.0))(x, seed=1, return_params=True)
    for n in range(16):
        top, left, h, w = boxes[n]
        crop = torch.from_numpy(x[n:n + 1, :, top:top + h, left:left + w].copy())
        ref = torch.nn.functional.interpolate(crop, size=(7, 8), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(y[n], ref[0].numpy(), rtol=1e-5, atol=1e-5)


def test_random_resized_crop_sampling_follows_torchvision_rule():
    # Replay the documented draw order with the pure-Python Philox for a few samples.
    H, W, scale, ratio = 10, 12, (0.08, 1.0), (3 / 4, 4 / 3)
    x = rand((6, 1, H, W))
    _, boxes = D.RandomResizedCrop(5, scale=scale, ratio=ratio)(x, seed=77, return_params=True)

    def rnd(v):
        return int(math.floor(v + 0.5))
    for n in range(6):
        words = stream_words(77, 0, 3, n, 40)
        for a in range(10):
            u = [wd * 2.0**-32 for wd in words[4 * a:4 * a + 2]]
            area = H * W * (scale[0] + (scale[1] - scale[0]) * u[0])
            lr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1]
            w, h = rnd(math.sqrt(area * math.exp(lr))), rnd(math.sqrt(area / math.exp(lr)))
            if 0 < w <= W and 0 < h <= H:
                top = (words[4 * a + 2] * (H - h + 1)) >> 32
                left = (words[4 * a + 3] * (W - w + 1)) >> 32
                assert tuple(boxes[n]) == (top, left, h, w)
                break
        else:
            pytest.fail("no accepted attempt in 10 (fallback not expected at these settings)")


def affine_ref(img, angle, ty, tx, scale, fill):
    C, H, W = img.shape
    cy, cx = (H - 1) / 2, (W - 1) / 2
    a = math.radians(angle)
    cs, sn = math.cos(a) / scale, math.sin(a) / scale
    out = np.empty((C, H, W))
    for i in range(H):
        for j in range(W):
            dy, dx = i - cy - ty, j - cx - tx
            sy, sx = cy + cs * dy + sn * dx, cx - sn * dy + cs * dx
            y0, x0 = math.floor(sy), math.floor(sx)
            wy, wx = sy - y0, sx - x0

            def at(r, c):
                return img[:, r, c].astype(np.float64) if 0 <= r < H and 0 <= c < W else np.full(C, fill)
            out[:, i, j] = ((1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1))
                            + wy * ((1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1)))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_affine_matches_reference(dtype):
    x = rand((10, 2, 7, 9), 6, dtype)
    t = D.RandomAffine(degrees=15, translate=(0.1, 0.2), scale=(0.9, 1.1), fill=0.25)
    y, prm = t(x, seed=3, epoch=5, return_params=True)
    # translate = (width fraction, height fraction), as torchvision: |tx| <= 0.1 W, |ty| <= 0.2 H
    assert np.all(np.abs(prm[:, 0]) <= 15) and np.all(np.abs(prm[:, 1]) <= 0.2 * 7)
    assert np.all(np.abs(prm[:, 2]) <= 0.1 * 9) and np.all((prm[:, 3] >= 0.9) & (prm[:, 3] <= 1.1))
    assert np.abs(prm[:, 1]).max() > 0.1 * 7 * 0.8 and np.abs(prm[:, 2]).max() > 0.1 * 9 * 0.5
    for n in range(10):
        np.testing.assert_allclose(y[n], affine_ref(x[n], *prm[n], 0.25), rtol=1e-5, atol=1e-5)


def test_random_affine_identity_and_rotation_direction():
    x = rand((3, 1, 5, 5))
    np.testing.assert_allclose(D.RandomAffine()(x), x, rtol=0, atol=1e-6)
    # 90 degrees counter-clockwise (on screen) by hand: the top row moves to the left column, reversed.
    img = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    t = D.RandomAffine(degrees=90)
    y, prm = t(np.repeat(img, 400, axis=0), return_params=True)
    n = int(np.argmax(prm[:, 0]))  # the sample closest to +90
    assert prm[n, 0] > 89.0
    ccw, cw = np.rot90(img[0, 0], 1), np.rot90(img[0, 0], -1)
    assert np.abs(y[n, 0] - ccw).max() < 0.5 < np.abs(y[n, 0] - cw).max()
    np.testing.assert_allclose(y[n, 0, 1], ccw[1], atol=0.15)  # the middle row barely leaves the image


# ---------------------------------------------------------------- colour

def jitter_ref(img, perm, b, c, s, strengths):
    v = img.astype(np.float64)
    gray = (lambda u: 0.299 * u[0] + 0.587 * u[1] + 0.114 * u[2]) if v.shape[0] == 3 else (lambda u: u[0])
    for op in list(itertools.permutations((0, 1, 2)))[int(perm)]:
        if strengths[op] == 0:
            continue
        if op == 0:
            v = v * b
        elif op == 1:
            v = c * v + (1 - c) * gray(v).mean()
        else:
            v = s * v + (1 - s) * gray(v)[None]
    return v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("strengths", [(0.4, 0.4, 0.4), (0.5, 0.0, 0.3), (0.0, 0.8, 0.0), (1.5, 0.2, 1.0)])
def test_color_jitter_matches_reference(dtype, strengths):
    x = np.random.default_rng(7).random((30, 3, 5, 6)).astype(dtype)
    y, prm = D.ColorJitter(*strengths)(x, seed=2, return_params=True)
    for n in range(30):
        perm, b, c, s = prm[n]
        for f, st in zip((b, c, s), strengths):
            assert max(0, 1 - st) <= f <= 1 + st
        np.testing.assert_allclose(y[n], jitter_ref(x[n], perm, b, c, s, strengths), rtol=1e-5, atol=1e-5)
    assert len(set(prm[:, 0])) > 1


def test_color_jitter_grey_images_and_channel_checks():
    x = np.random.default_rng(8).random((5, 1, 4, 4)).astype(np.float32)
    y, prm = D.ColorJitter(0.3, 0.3)(x, return_params=True)
    for n in range(5):
        np.testing.assert_allclose(y[n], jitter_ref(x[n], *prm[n], (0.3, 0.3, 0.0)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="saturation needs 3 channels"):
        D.ColorJitter(saturation=0.2)(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pca_lighting_matches_reference(dtype):
    x = rand((500, 3, 4, 4), 9, dtype)
    t = D.PCALighting(0.1)
    y, alpha = t(x, seed=11, return_params=True)
    for n in range(0, 500, 37):
        delta = D.transforms.IMAGENET_EIGVEC @ (alpha[n] * D.transforms.IMAGENET_EIGVAL)
        np.testing.assert_allclose(y[n], x[n] + delta[:, None, None], rtol=1e-5, atol=1e-6)
    assert abs(alpha.std() - 0.1) < 0.01 and abs(alpha.mean()) < 0.01


def test_pca_lighting_fit():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((200, 3, 4, 4)) * np.array([3.0, 1.0, 0.2])[None, :, None, None]).astype(np.float32)
    t = D.PCALighting.fit(x, alphastd=0.2)
    assert t.eigval[0] > t.eigval[1] > t.eigval[2] > 0
    cov = np.cov(x.transpose(1, 0, 2, 3).reshape(3, -1), bias=True)
    np.testing.assert_allclose(t.eigvec @ np.diag(t.eigval) @ t.eigvec.T, cov, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- composition and determinism

def pipeline():
    return D.Compose([D.RandomResizedCrop(12, scale=(0.5, 1.0)), D.RandomCrop(12, padding=2),
                      D.RandomHorizontalFlip(), D.ColorJitter(0.3, 0.3, 0.3), D.PCALighting(0.1),
                      D.RandomAffine(10, (0.1, 0.1))])


def test_compose_gives_members_distinct_streams():
    x = rand((64, 1, 4, 4))
    f1, f2 = D.RandomHorizontalFlip(), D.RandomHorizontalFlip()
    y = D.Compose([f1, f2])(x, seed=5)
    _, p1 = f1(x, seed=5, stream=1, return_params=True)
    _, p2 = f2(x, seed=5, stream=2, return_params=True)
    assert not np.array_equal(p1, p2)  # otherwise the two flips would always cancel
    ref = np.where((p1 ^ p2)[:, None, None, None].astype(bool), x[..., ::-1], x)
    np.testing.assert_array_equal(y, ref)


def test_same_seed_same_batch_at_1_and_2_threads():
    x = rand((33, 3, 16, 16), 10)
    ids = np.random.default_rng(1).permutation(1000)[:33].astype(np.int64)
    t = pipeline()
    old = ck.get_num_threads()
    try:
        ck.set_num_threads(1)
        a = t(x, ids=ids, epoch=4, seed=99)
        ck.set_num_threads(2)
        b = t(x, ids=ids, epoch=4, seed=99)
    finally:
        ck.set_num_threads(old)
    c = t(x, ids=ids, epoch=4, seed=99, num_threads=2)
    assert a.tobytes() == b.tobytes() == c.tobytes()
    # per-sample keys: a sample's output does not depend on the rest of the batch
    d = t(np.ascontiguousarray(x[5:9]), ids=ids[5:9], epoch=4, seed=99, num_threads=1)
    assert d.tobytes() == a[5:9].tobytes()
    assert not np.array_equal(t(x, ids=ids, epoch=5, seed=99), a)
    assert not np.array_equal(t(x, ids=ids, epoch=4, seed=98), a)


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs_raise_naming_the_argument():
    x = rand((2, 3, 4, 4))
    with pytest.raises(TypeError, match="RandomCrop: x must be a numpy.ndarray"):
        D.RandomCrop(2)([[1.0]])
    with pytest.raises(TypeError, match="x must be float32 or float64, got int64"):
        D.RandomHorizontalFlip()(np.zeros((1, 1, 2, 2), np.int64))
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\), got shape \(3, 4, 4\)"):
        D.RandomHorizontalFlip()(x[0])
    with pytest.raises(ValueError, match="C-contiguous"):
        D.RandomHorizontalFlip()(x[:, :, :, ::2])
    with pytest.raises(ValueError, match="p must be <= 1.0"):
        D.RandomHorizontalFlip(1.5)
    with pytest.raises(TypeError, match="padding must be an int"):
        D.RandomCrop(3, padding=1.5)
    with pytest.raises(ValueError, match="size must be >= 1"):
        D.RandomCrop(0)
    with pytest.raises(ValueError, match=r"size \(9, 9\) must fit in the padded image \(6, 6\)"):
        D.RandomCrop(9, padding=1)(x)
    with pytest.raises(ValueError, match="scale must satisfy 0 < lo <= hi"):
        D.RandomResizedCrop(3, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="brightness must be >= 0"):
        D.ColorJitter(brightness=-0.1)
    with pytest.raises(ValueError, match=r"ids must have shape \(2,\)"):
        D.RandomHorizontalFlip()(x, ids=np.arange(3))
    with pytest.raises(TypeError, match="ids must hold integers"):
        D.RandomHorizontalFlip()(x, ids=np.zeros(2))
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        D.RandomHorizontalFlip()(x, epoch=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        D.RandomHorizontalFlip()(x, seed="1")
    with pytest.raises(ValueError, match="PCALighting: x has C = 1 channels"):
        D.PCALighting()(rand((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="degrees must be <= 180"):
        D.RandomAffine(degrees=200)
    with pytest.raises(TypeError, match="Compose: every member must be callable"):
        D.Compose([1])


def test_fused_compose_equals_member_by_member_calls():
    x = rand((20, 3, 16, 16), 12)
    ids = np.arange(50, 70, dtype=np.int64)
    t = pipeline()
    fused = t(x, ids=ids, epoch=2, seed=8)
    y = x
    for k, m in enumerate(t.transforms):
        y = m(y, ids=ids, epoch=2, seed=8, stream=k + 1)
    assert fused.tobytes() == y.tobytes()
    # a plain callable in the middle splits the fused run without changing any stream
    scale2 = D.Compose([t.transforms[0], lambda v: v * 2, *t.transforms[1:]])
    y2 = scale2(x, ids=ids, epoch=2, seed=8)
    z = t.transforms[0](x, ids=ids, epoch=2, seed=8, stream=1) * 2
    for k, m in enumerate(t.transforms[1:]):
        z = m(z, ids=ids, epoch=2, seed=8, stream=k + 3)
    assert y2.tobytes() == z.tobytes()
