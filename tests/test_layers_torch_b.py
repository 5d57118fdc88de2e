# torch.nn layers that change the spatial size, each against its torch twin in float64 (1e-10) and float32,
# and through ck.gradcheck: ConvTranspose2d (F.conv_transpose2d), ZeroPad2d, Upsample, Dropout2d,
# AdaptiveMaxPool2d, MaxPool2d(return_indices=True), Conv2d padding="same" with even kernels and padding_mode.
import numpy as np
import pytest

import cnnkit as ck
import cnnkit.functional as CF

from test_layers import DTYPES, close, rnd, twin

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)


def _gc(layer, shape, seed=9):
    layer.manual_seed(3)
    report = ck.gradcheck(layer, rnd(*shape, seed=seed), max_coords=16)
    assert report.ok and report.kinks == 0
    assert report.rows[0]["name"] == "input" and report.rows[0]["checked"] > 0


# ---------------------------------------------------------------- ConvTranspose2d

_CT_CASES = [dict(), dict(stride=2), dict(stride=2, padding=1, output_padding=1), dict(stride=3, output_padding=2),
             dict(groups=2), dict(stride=2, padding=2, dilation=2, groups=2),
             dict(stride=1, dilation=2, output_padding=1), dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0)),
             dict(bias=False, stride=2, dilation=3, output_padding=2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", _CT_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_conv_transpose2d_matches_torch(dtype, kw):
    layer = ck.ConvTranspose2d(4, 6, (3, 2), seed=1, **kw)
    _, tmod = twin(layer, torch.nn.ConvTranspose2d(4, 6, (3, 2), **kw), rnd(2, 4, 5, 4), dtype)
    assert sorted(k for k, _ in tmod.named_parameters()) == sorted(k for k, _ in layer.named_parameters())
    assert layer.output_shape((2, 4, 5, 4)) == tuple(tmod(torch.zeros(2, 4, 5, 4, dtype=tmod.weight.dtype)).shape)


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, output_padding=1), dict(dilation=2, output_padding=1, groups=2)])
def test_functional_conv_transpose2d_matches_torch(kw):
    x, w, b = rnd(2, 4, 5, 4), rnd(4, 3, 3, 3, seed=1), rnd(3 * kw.get("groups", 1), seed=2)
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
    cx, cw, cb = ck.Tensor(x, requires_grad=True), ck.Tensor(w, requires_grad=True), ck.Tensor(b, requires_grad=True)
    y = CF.conv_transpose2d(cx, cw, cb, **kw)
    ty = F.conv_transpose2d(tx, tw, tb, **kw)
    close(y.data, ty, 1e-10, "F.conv_transpose2d forward")
    g = rnd(*ty.shape, seed=3)
    CF.sum(CF.mul(y, g)).backward()
    ty.backward(torch.from_numpy(g))
    for ours, ref, n in ((cx, tx, "dx"), (cw, tw, "dw"), (cb, tb, "db")):
        close(ours.grad, ref.grad, 1e-10, f"F.conv_transpose2d {n}")


def test_conv_transpose2d_state_dict_loads_torch_weights_and_init_is_torchs():
    tmod = torch.nn.ConvTranspose2d(3, 4, 3, stride=2).double()
    layer = ck.ConvTranspose2d(3, 4, 3, stride=2, dtype=np.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in tmod.state_dict().items()})
    x = rnd(1, 3, 4, 4)
    close(layer(x), tmod(torch.from_numpy(x)), 1e-10, "loaded weights")
    big = ck.ConvTranspose2d(8, 64, 3, groups=2, seed=0)
    bound = 1 / np.sqrt(64 // 2 * 9)      # torch: kaiming_uniform(a=sqrt(5)) on fan_in = C_out/groups * R * S
    for p in (big.weight.data, big.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    assert abs(big.weight.data.std() - bound / np.sqrt(3)) < 0.05 * bound
    assert big.weight.shape == (8, 32, 3, 3) == tuple(torch.nn.ConvTranspose2d(8, 64, 3, groups=2).weight.shape)


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, output_padding=1), dict(dilation=2, output_padding=1, groups=2)])
def test_conv_transpose2d_passes_gradcheck(kw):
    _gc(ck.ConvTranspose2d(2, 4, 3, seed=0, **kw), (2, 2, 4, 3))


def test_conv_transpose2d_saves_and_loads(tmp_path):
    m = ck.Sequential(ck.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, seed=0))
    m.save(tmp_path / "m.ck")
    m2 = ck.load(tmp_path / "m.ck")
    x = rnd(2, 3, 4, 4).astype(np.float32)
    assert np.array_equal(m(x), m2(x)) and m(x).shape == (2, 2, 8, 8)


@pytest.mark.parametrize("kw, message", [
    (dict(stride=2, output_padding=2), r"ConvTranspose2d: output_padding must be smaller than either stride or dilation"),
    (dict(output_padding=1), r"output_padding must be smaller than either stride or dilation, got output_padding \(1, 1\)"),
    (dict(stride=0), r"ConvTranspose2d: stride must be >= 1, got 0"),
    (dict(groups=4), r"ConvTranspose2d: in_channels \(4\) and out_channels \(6\) must be divisible by groups \(4\)"),
])
def test_conv_transpose2d_bad_arguments_raise(kw, message):
    with pytest.raises(ValueError, match=message):
        ck.ConvTranspose2d(4, 6, 3, **kw)


def test_conv_transpose2d_bad_input_raises():
    with pytest.raises(ValueError, match=r"ConvTranspose2d: expects 4 input channels, got shape \(1, 3, 5, 5\)"):
        ck.ConvTranspose2d(4, 6, 3)(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"ConvTranspose2d: the output size"):
        ck.ConvTranspose2d(4, 6, 1, padding=1)(np.zeros((1, 4, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"F.conv_transpose2d: output_padding must be smaller"):
        CF.conv_transpose2d(np.zeros((1, 4, 3, 3)), np.zeros((4, 2, 3, 3)), output_padding=1)


# ---------------------------------------------------------------- ZeroPad2d, Upsample

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", [2, (1, 0, 3, 2), (0, 2, 0, 1)])
def test_zeropad2d_matches_torch(dtype, padding):
    twin(ck.ZeroPad2d(padding), torch.nn.ZeroPad2d(padding), rnd(2, 3, 4, 5), dtype)
    twin(ck.ZeroPad2d(padding), torch.nn.ZeroPad2d(padding), rnd(3, 4, 5), dtype)      # unbatched (C, H, W)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [dict(scale_factor=2), dict(scale_factor=3), dict(scale_factor=(2, 3)),
                                dict(scale_factor=2.0), dict(size=(7, 13)), dict(size=(3, 4)), dict(size=(5, 11)),
                                dict(size=10)], ids=str)
def test_upsample_nearest_matches_torch(dtype, kw):
    twin(ck.Upsample(**kw), torch.nn.Upsample(**kw), rnd(2, 3, 5, 6), dtype)


# (input shape, Upsample arguments): whole scale factors, sizes that are no multiple (5 -> 7, 6 -> 13) and a
# downsampling size (7 -> 3), and a 1-row output (align_corners then reads row 0)
_BILINEAR_CASES = [((2, 3, 5, 6), dict(scale_factor=2)), ((2, 3, 5, 6), dict(scale_factor=3)),
                   ((2, 3, 5, 6), dict(scale_factor=(2, 3))), ((2, 3, 5, 6), dict(size=(7, 13))),
                   ((2, 3, 7, 6), dict(size=(3, 13))), ((1, 2, 7, 5), dict(size=(3, 2))),
                   ((1, 2, 4, 5), dict(size=(1, 9))), ((2, 1, 1, 3), dict(size=(4, 5)))]


def _bilinear_vs_torch(ours, ref, x, dtype, fwd_tol, bwd_tol, what):
    """ours(x) -> (y, dx given dy) against torch's ref(tx); forward within fwd_tol, dx within bwd_tol."""
    x = np.ascontiguousarray(x, dtype=dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = ref(tx)
    dy = rnd(*ty.shape, seed=5).astype(dtype)
    y, dx = ours(x, dy)
    close(y, ty, fwd_tol, f"{what} forward {np.dtype(dtype)}")
    ty.backward(torch.from_numpy(dy))
    close(dx, tx.grad, bwd_tol, f"{what} dx {np.dtype(dtype)}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape, kw", _BILINEAR_CASES, ids=str)
def test_upsample_bilinear_matches_torch(dtype, align_corners, shape, kw):
    layer = ck.Upsample(mode="bilinear", align_corners=align_corners, **kw).to(dtype)
    tmod = torch.nn.Upsample(mode="bilinear", align_corners=align_corners, **kw)

    def ours(x, dy):
        return layer(x), layer.backward(dy)

    tol = (1e-12, 1e-10) if dtype == np.float64 else (1e-5, 1e-5)
    _bilinear_vs_torch(ours, tmod, rnd(*shape), dtype, *tol, "Upsample bilinear")
    assert layer.output_shape(shape) == tuple(tmod(torch.zeros(shape)).shape)


def test_upsample_bilinear_default_align_corners_is_false_as_torch():
    x = rnd(1, 2, 3, 4)
    assert ck.Upsample(scale_factor=2, mode="bilinear").align_corners is False
    close(ck.Upsample(scale_factor=2, mode="bilinear")(x),
          torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)(torch.from_numpy(x)), 1e-12, "default")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode, align_corners", [("nearest", None), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("kw", [dict(scale_factor=2), dict(size=(7, 13)), dict(size=(3, 4))], ids=str)
def test_functional_interpolate_matches_torch(dtype, mode, align_corners, kw):
    def ours(x, dy):
        cx = ck.Tensor(x, requires_grad=True)
        y = CF.interpolate(cx, mode=mode, align_corners=align_corners, **kw)
        CF.sum(CF.mul(y, dy)).backward()
        return y.data, cx.grad

    tol = (1e-12, 1e-10) if dtype == np.float64 else (1e-5, 1e-5)
    _bilinear_vs_torch(ours, lambda t: F.interpolate(t, mode=mode, align_corners=align_corners, **kw),
                       rnd(2, 3, 5, 6), dtype, *tol, f"F.interpolate {mode}")
    y = CF.upsample(rnd(2, 3, 5, 6).astype(dtype), mode=mode, align_corners=align_corners, **kw)
    close(y.data, F.interpolate(torch.from_numpy(rnd(2, 3, 5, 6).astype(dtype)), mode=mode,
                                align_corners=align_corners, **kw), tol[0], "F.upsample")


@pytest.mark.parametrize("kw, exc, message", [
    (dict(size=4, antialias=True), ValueError, r"F.interpolate: antialias=True is not supported"),
    (dict(size=4, mode="bicubic"), ValueError, r"F.interpolate: mode must be 'nearest' or 'bilinear', got 'bicubic'"),
    (dict(size=4, align_corners=True), ValueError, r"F.interpolate: align_corners only applies to"),
    (dict(size=4, recompute_scale_factor="yes"), TypeError, r"F.interpolate: recompute_scale_factor must be"),
])
def test_functional_interpolate_bad_arguments_raise(kw, exc, message):
    with pytest.raises(exc, match=message):
        CF.interpolate(np.zeros((1, 1, 2, 2)), **kw)


def test_functional_interpolate_bad_input_raises():
    with pytest.raises(ValueError, match=r"F.interpolate: input must be 4-D \(N, C, H, W\)"):
        CF.interpolate(np.zeros((1, 2, 2)), size=4, mode="bilinear")


@pytest.mark.parametrize("kw, exc, message", [
    (dict(scale_factor=2, mode="bicubic"), ValueError, r"Upsample: mode must be 'nearest' or 'bilinear', got 'bicubic'"),
    (dict(scale_factor=2, align_corners=True), ValueError, r"Upsample: align_corners only applies to the interpolating modes; mode 'nearest' takes align_corners=None, got True"),
    (dict(scale_factor=2, align_corners=False), ValueError, r"mode 'nearest' takes align_corners=None, got False"),
    (dict(scale_factor=2, mode="bilinear", align_corners=1), TypeError, r"Upsample: align_corners must be"),
    (dict(scale_factor=1.5), ValueError, r"Upsample: scale_factor must be a whole number >= 1 or a pair of them, got 1.5"),
    (dict(), ValueError, r"Upsample: give exactly one of size and scale_factor"),
    (dict(size=0), ValueError, r"Upsample: size must be >= 1, got 0"),
])
def test_upsample_bad_arguments_raise(kw, exc, message):
    with pytest.raises(exc, match=message):
        ck.Upsample(**kw)


def test_zeropad2d_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"ZeroPad2d: padding must be an int or a 4-tuple \(left, right, top, bottom\), got \(1, 2\)"):
        ck.ZeroPad2d((1, 2))
    with pytest.raises(ValueError, match=r"ZeroPad2d: padding must be >= 0, got -1"):
        ck.ZeroPad2d((1, 2, -1, 0))
    with pytest.raises(ValueError, match=r"ZeroPad2d: input must be 3-D \(C, H, W\) or 4-D"):
        ck.ZeroPad2d(1)(np.zeros((2, 3), np.float32))


# ---------------------------------------------------------------- Dropout2d

@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout2d_zeroes_whole_channels_with_the_mask_it_reports(dtype):
    layer = ck.Dropout2d(0.4)
    layer.manual_seed(2)
    x = rnd(4, 6, 3, 5) + 3.0                            # no zeros in x: a zero in y is a dropped plane

    def tfn(t):   # torch's channel dropout with our (N, C) mask: x * mask / (1 - p)
        return t * (torch.from_numpy(layer.last_mask.astype(dtype)) / (1 - 0.4))[:, :, None, None]

    y, _ = twin(layer, None, x, dtype, tfn=tfn)
    mask = layer.last_mask
    assert mask.shape == (4, 6) and mask.dtype == np.uint8 and 0 < mask.sum() < mask.size
    dropped = (y == 0).all(axis=(2, 3))
    assert np.array_equal(dropped, mask == 0) and not (y == 0)[mask == 1].any()
    dy = rnd(*y.shape, seed=4).astype(dtype)
    layer(x.astype(dtype))                               # backward uses the mask of its own forward
    m2 = layer.last_mask
    assert not np.array_equal(m2, mask)                  # a fresh draw per training call
    np.testing.assert_array_equal(layer.backward(dy), dy * (m2.astype(dtype) / dtype(1 - 0.4))[:, :, None, None])
    twin(layer, torch.nn.Dropout2d(0.4), x, dtype, train=False)    # eval: identity


def test_dropout2d_statistics_and_streams():
    layer = ck.Dropout2d(0.3)
    layer.manual_seed(5)
    y = layer(np.ones((200, 100, 2, 2), np.float32))
    keep = layer.last_mask.mean()
    assert abs(keep - 0.7) < 0.015                       # 20,000 planes at 0.7: sd 0.0032
    assert set(np.unique(y)) == {np.float32(0), np.float32(1 / np.float32(0.7))}
    a = ck.Sequential(ck.Dropout2d(0.5), seed=7)
    b = ck.Sequential(ck.Dropout2d(0.5), seed=7)
    x = np.ones((8, 16, 2, 2), np.float32)
    assert np.array_equal(a(x), b(x))                    # the model's seed gives the same stream
    assert not np.array_equal(a[0].last_mask, ck.Sequential(ck.Dropout2d(0.5), seed=8)(x)[:, :, 0, 0] > 0)
    with pytest.raises(ValueError, match=r"Dropout2d: input must be 4-D \(N, C, H, W\)"):
        ck.Dropout2d(0.5)(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"Dropout2d: p \(the drop probability\) must be in \[0, 1\)"):
        ck.Dropout2d(1.0)


# ---------------------------------------------------------------- AdaptiveMaxPool2d

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out,shape", [((3, 2), (2, 3, 7, 5)), (4, (2, 2, 8, 8)), ((5, 7), (1, 2, 3, 4)),
                                       (1, (2, 3, 5, 6))], ids=str)
def test_adaptive_maxpool_matches_torch(dtype, out, shape):
    twin(ck.AdaptiveMaxPool2d(out), torch.nn.AdaptiveMaxPool2d(out), rnd(*shape), dtype)


def test_adaptive_maxpool_ties_go_to_the_first_maximum_as_torch():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 1, 1] = x[0, 0, 1, 3] = x[0, 0, 3, 1] = 1.0     # ties inside overlapping bins
    layer, tmod = ck.AdaptiveMaxPool2d(3), torch.nn.AdaptiveMaxPool2d(3, return_indices=True)
    _, tidx = tmod(torch.from_numpy(x))
    layer(x)
    assert np.array_equal(layer._cache[0], tidx.numpy())
    twin(layer, torch.nn.AdaptiveMaxPool2d(3), x, np.float64)


@pytest.mark.parametrize("name,make,shape", [
    ("zeropad", lambda: ck.ZeroPad2d((1, 2, 0, 1)), (2, 2, 3, 3)),
    ("upsample", lambda: ck.Upsample(scale_factor=2), (2, 2, 3, 3)),
    ("upsample-size", lambda: ck.Upsample(size=(5, 7)), (2, 2, 3, 4)),
    ("bilinear", lambda: ck.Upsample(scale_factor=2, mode="bilinear"), (2, 2, 3, 3)),
    ("bilinear-corners", lambda: ck.Upsample(size=(5, 7), mode="bilinear", align_corners=True), (2, 2, 3, 4)),
    ("bilinear-down", lambda: ck.Upsample(size=(3, 2), mode="bilinear"), (2, 2, 7, 5)),
    ("dropout2d", lambda: ck.Dropout2d(0.4), (4, 3, 2, 2)),
    ("adaptive-max", lambda: ck.AdaptiveMaxPool2d((3, 2)), (2, 2, 7, 5)),
], ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("train", [True, False])
def test_resizing_layers_pass_gradcheck(name, make, shape, train):
    _gc(make().train(train), shape)


def test_new_layers_save_and_load(tmp_path):
    m = ck.Sequential(ck.ZeroPad2d((1, 0, 2, 1)), ck.Upsample(size=(9, 8)), ck.Dropout2d(0.2),
                      ck.AdaptiveMaxPool2d((4, 3)), ck.Upsample(scale_factor=(2, 1)), seed=3)
    m.save(tmp_path / "m.ck")
    m2 = ck.load(tmp_path / "m.ck")
    x = rnd(2, 3, 4, 5).astype(np.float32)
    assert np.array_equal(m(x), m2(x)) and m(x).shape == (2, 3, 8, 3)
    assert [type(l).__name__ for l in m2] == ["ZeroPad2d", "Upsample", "Dropout2d", "AdaptiveMaxPool2d", "Upsample"]


@pytest.mark.parametrize("kw", [dict(size=(9, 8), mode="bilinear", align_corners=True),
                                dict(scale_factor=(2, 3), mode="bilinear", align_corners=False),
                                dict(scale_factor=2)], ids=str)
def test_upsample_config_round_trips_mode_and_align_corners(tmp_path, kw):
    layer = ck.Upsample(**kw)
    cfg = layer.config()
    assert cfg["mode"] == kw.get("mode", "nearest") and cfg["align_corners"] == kw.get("align_corners")
    again = ck.Upsample(**cfg)
    assert again.config() == cfg
    m = ck.Sequential(ck.Upsample(**kw))
    m.save(tmp_path / "m.ck")
    m2 = ck.load(tmp_path / "m.ck")
    assert m2[0].mode == layer.mode and m2[0].align_corners == layer.align_corners
    x = rnd(2, 3, 4, 5).astype(np.float32)
    assert np.array_equal(m(x), m2(x))


# ---------------------------------------------------------------- MaxPool2d(return_indices=True)

_MP_CASES = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
             dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True), dict(kernel_size=(2, 3), stride=1)]


@pytest.mark.parametrize("kw", _MP_CASES, ids=str)
def test_maxpool_return_indices_are_torchs(kw):
    x = rnd(2, 3, 9, 8)
    x[0, 0, :4, :4] = 1.0                                  # ties: the first maximum, as torch
    ty, tidx = torch.nn.MaxPool2d(return_indices=True, **kw)(torch.from_numpy(x))
    y, idx = ck.MaxPool2d(return_indices=True, **kw)(x)
    assert idx.dtype == np.int64 and np.array_equal(idx, tidx.numpy()) and np.array_equal(y, ty.numpy())
    fy, fidx = CF.max_pool2d(x, return_indices=True, **kw)
    assert np.array_equal(fidx, tidx.numpy()) and np.array_equal(fy.data, ty.numpy())
    if "dilation" in kw:
        return                                             # torch's max_unpool2d takes no dilation
    unpool = dict(kernel_size=kw["kernel_size"], stride=kw.get("stride"), padding=kw.get("padding", 0),
                  output_size=x.shape[2:])
    ours = F.max_unpool2d(torch.from_numpy(y), torch.from_numpy(idx), **unpool)     # torch reads our indices
    assert torch.equal(ours, F.max_unpool2d(ty, tidx, **unpool))


def test_maxpool_return_indices_in_a_module_and_gradients():
    class Net(ck.Module):
        def __init__(self):
            super().__init__()
            self.pool = ck.MaxPool2d(2, return_indices=True)

        def forward(self, x):
            y, idx = self.pool(x)
            self.idx = idx
            return CF.mul(y, 2.0)

    x = ck.Tensor(rnd(2, 2, 4, 6), requires_grad=True)
    net = Net()
    out = net(x)
    CF.sum(out).backward()
    tx = torch.from_numpy(rnd(2, 2, 4, 6)).requires_grad_(True)
    ty, tidx = F.max_pool2d(tx, 2, return_indices=True)
    (ty * 2).sum().backward()
    assert np.array_equal(net.idx, tidx.numpy())
    close(x.grad, tx.grad, 1e-12, "dx through the values of return_indices")
    seq = ck.Sequential(ck.MaxPool2d(2, return_indices=True), ck.Flatten())   # a model passes the values on
    assert seq(rnd(2, 2, 4, 6)).shape == (2, 12)
    assert np.array_equal(seq[0].last_indices, tidx.numpy())
    assert ck.MaxPool2d(2, return_indices=True).config()["return_indices"] is True
    with pytest.raises(TypeError, match=r"MaxPool2d: return_indices must be a bool, got int"):
        ck.MaxPool2d(2, return_indices=1)


# ---------------------------------------------------------------- Conv2d padding="same" (even kernels), padding_mode

_PAD_CASES = [dict(kernel_size=4, padding="same"), dict(kernel_size=(2, 3), padding="same"),
              dict(kernel_size=(4, 2), padding="same", dilation=(1, 3)), dict(kernel_size=3, padding="same"),
              dict(kernel_size=3, padding=1, padding_mode="reflect"), dict(kernel_size=3, padding=(2, 1), stride=2,
                                                                           padding_mode="replicate"),
              dict(kernel_size=3, padding=(1, 3), padding_mode="circular", groups=2),
              dict(kernel_size=4, padding="same", padding_mode="reflect"),
              dict(kernel_size=(2, 5), padding="same", padding_mode="circular", dilation=(2, 1)),
              dict(kernel_size=2, padding="same", padding_mode="replicate"),
              dict(kernel_size=3, padding=2, dilation=2, padding_mode="zeros")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", _PAD_CASES, ids=str)
def test_conv2d_same_and_padding_modes_match_torch(dtype, kw):
    layer = ck.Conv2d(4, 6, seed=1, bias_init="gaussian(0.1)", **kw)
    y, tmod = twin(layer, torch.nn.Conv2d(4, 6, **kw), rnd(2, 4, 7, 6), dtype)
    if kw.get("padding") == "same":
        assert y.shape == (2, 6, 7, 6)


@pytest.mark.parametrize("kw", [dict(kernel_size=4, padding="same"), dict(kernel_size=3, padding=2,
                                                                         padding_mode="reflect"),
                                dict(kernel_size=(2, 3), padding="same", padding_mode="circular")], ids=str)
def test_conv2d_padding_modes_pass_gradcheck_and_save(kw, tmp_path):
    _gc(ck.Conv2d(2, 3, seed=0, **kw), (2, 2, 5, 4))
    m = ck.Sequential(ck.Conv2d(2, 3, seed=0, **kw))
    m.save(tmp_path / "m.ck")
    x = rnd(2, 2, 5, 4).astype(np.float32)
    assert np.array_equal(ck.load(tmp_path / "m.ck")(x), m(x))


def test_functional_conv2d_same_with_an_even_kernel_matches_torch():
    x, w, b = rnd(2, 3, 6, 5), rnd(4, 3, 2, 4, seed=1), rnd(4, seed=2)
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
    cx, cw, cb = ck.Tensor(x, requires_grad=True), ck.Tensor(w, requires_grad=True), ck.Tensor(b, requires_grad=True)
    y = CF.conv2d(cx, cw, cb, padding="same", dilation=(1, 2))
    ty = F.conv2d(tx, tw, tb, padding="same", dilation=(1, 2))
    close(y.data, ty, 1e-10, "F.conv2d same forward")
    g = rnd(*ty.shape, seed=3)
    CF.sum(CF.mul(y, g)).backward()
    ty.backward(torch.from_numpy(g))
    for ours, ref, n in ((cx, tx, "dx"), (cw, tw, "dw"), (cb, tb, "db")):
        close(ours.grad, ref.grad, 1e-10, f"F.conv2d same {n}")


def test_conv2d_padding_mode_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"Conv2d: padding_mode must be one of \['zeros', 'reflect', 'replicate', "
                                         r"'circular'\], got 'mirror'"):
        ck.Conv2d(1, 2, 3, padding=1, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"Conv2d: padding_mode 'reflect' needs padding < the input size"):
        ck.Conv2d(1, 2, 3, padding=3, padding_mode="reflect")(np.zeros((1, 1, 3, 8), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: padding_mode 'circular' needs padding <= the input size"):
        ck.Conv2d(1, 2, 3, padding=4, padding_mode="circular")(np.zeros((1, 1, 3, 8), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: padding='same' needs stride 1"):
        ck.Conv2d(1, 2, 4, stride=2, padding="same")
    assert ck.Conv2d(1, 2, 4, padding="same").padding == "same"           # as torch's attribute
    assert ck.Conv2d(1, 2, 4, padding="same").config()["padding"] == "same"
    assert ck.Conv2d(1, 2, 3, padding=1, padding_mode="reflect").config()["padding_mode"] == "reflect"
