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
