# The reference CIFAR-style net of bench/cases.json ("e2e"), built from its layer list both in
# cnnkit and in torch with the same weights: the same loss and the same gradient for every parameter, with
# dropout in eval mode and in train mode (torch given our mask), in float64 (1e-10) and float32 (1e-5,
# relative to each tensor's largest entry); then ck.gradcheck on the whole net. The float32 input is drawn
# again while a ReLU kink would route the gradient (see _relu_near_kinks).
import json
import os
import re

import numpy as np
import pytest

import cnnkit as ck

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

CASES = os.path.join(os.path.dirname(__file__), "..", "bench", "cases.json")
E2E_NET = ["conv3x3(3->32, pad 1)", "relu", "maxpool 2x2", "conv3x3(32->64, pad 1)", "relu", "maxpool 2x2",
           "conv3x3(64->128, pad 1)", "relu", "maxpool 2x2", "flatten", "linear(2048->256)", "relu",
           "dropout(p=0.5)", "linear(256->10)"]


def spec():
    if os.path.exists(CASES):   # the benchmark case list is the source of truth (absent in an installed copy)
        with open(CASES) as f:
            e2e = json.load(f)["e2e"]
        assert e2e["net"] == E2E_NET and e2e["input"] == [3, 32, 32] and e2e["classes"] == 10
    return E2E_NET


class MaskedDropout(torch.nn.Module):
    """torch's side of train-mode dropout: the mask cnnkit drew, with the same 1/(1-p) scaling."""

    def __init__(self, ck_layer):
        super().__init__()
        self.ck_layer = ck_layer

    def forward(self, x):
        if not self.training:
            return x
        m = torch.from_numpy(self.ck_layer.last_mask.astype(x.detach().numpy().dtype))
        return x * m / (1 - self.ck_layer.p)


def build(dtype):
    ours, theirs = [], []
    for i, s in enumerate(spec()):
        if m := re.fullmatch(r"conv3x3\((\d+)->(\d+), pad (\d+)\)", s):
            c, k, p = map(int, m.groups())
            ours.append(ck.Conv2d(c, k, 3, padding=p, seed=i, bias_init="gaussian(0.05)"))
            theirs.append(torch.nn.Conv2d(c, k, 3, padding=p))
        elif m := re.fullmatch(r"linear\((\d+)->(\d+)\)", s):
            a, b = map(int, m.groups())
            ours.append(ck.Linear(a, b, seed=i, bias_init="gaussian(0.05)"))
            theirs.append(torch.nn.Linear(a, b))
        elif s == "relu":
            ours.append(ck.ReLU()), theirs.append(torch.nn.ReLU())
        elif s == "maxpool 2x2":
            ours.append(ck.MaxPool2d(2)), theirs.append(torch.nn.MaxPool2d(2))
        elif s == "flatten":
            ours.append(ck.Flatten()), theirs.append(torch.nn.Flatten())
        elif m := re.fullmatch(r"dropout\(p=([0-9.]+)\)", s):
            ours.append(ck.Dropout(float(m.group(1))))
            theirs.append(MaskedDropout(ours[-1]))
        else:
            raise AssertionError(f"unknown layer spec {s!r}")
    model = ck.Sequential(*ours, seed=1).to(dtype)
    tnet = torch.nn.Sequential(*theirs).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            tnet.get_parameter(n).copy_(torch.from_numpy(p.data))
    return model, tnet


def _relu_near_kinks(tnet, x, rel=1e-6):
    """ReLU inputs within `rel` of the layer's largest |input| from zero, counted where they decide the
    gradient: every such input when the ReLU feeds a layer that passes gradient everywhere, and a max-pool
    window whose largest input is that close to zero when the ReLU feeds a max-pool (elsewhere in the
    window the pool sends no gradient). There float32 rounding decides the sign, and so whether the
    gradient passes, differently in any two implementations (torch float32 against float64 too): a
    float32 conv output of -1.6e-7 whose float64 value is +4.4e-7 carried a 1.8e-5 gradient into conv1's
    weight gradient. Such an input is degenerate for a 1e-5 comparison of gradients. `rel` is above the
    largest float32 error of any activation of this net against float64 (8e-7 of the layer's largest in
    cnnkit, 4e-7 in torch, measured on an AVX-512 EPYC), so a kink farther from zero keeps its sign in float32."""
    import copy
    mods = list(copy.deepcopy(tnet).double().eval())
    v, found = torch.from_numpy(x).double(), 0
    with torch.no_grad():
        for i, m in enumerate(mods):
            if isinstance(m, torch.nn.ReLU):
                near = v
                if i + 1 < len(mods) and isinstance(mods[i + 1], torch.nn.MaxPool2d):
                    near = torch.nn.functional.max_pool2d(v, mods[i + 1].kernel_size, mods[i + 1].stride)
                found += int(((near.abs() <= rel * v.abs().max()) & (near != 0)).sum())
            v = m(v)
    return found


def _input(tnet, shape, dtype, rng):
    """A standard normal input; in float32 one with no ReLU near-kink, drawn again while there is one."""
    for _ in range(50):
        x = rng.standard_normal(shape).astype(dtype)
        if dtype == np.float64 or _relu_near_kinks(tnet, x) == 0:
            return x
    raise AssertionError("no input without a ReLU near-kink in 50 draws")


@pytest.mark.parametrize("dtype,batch", [(np.float64, 8), (np.float32, 32)])
@pytest.mark.parametrize("train", [False, True])
def test_reference_net_matches_torch(dtype, batch, train):
    tol = {np.float64: 1e-10, np.float32: 1e-5}[dtype]
    model, tnet = build(dtype)
    model.train(train), tnet.train(train)
    rng = np.random.default_rng(0)
    x = _input(tnet, (batch, 3, 32, 32), dtype, rng)
    y = rng.integers(0, 10, size=batch)
    scores = model(x)
    loss, dscores = ck.losses.softmax_cross_entropy(scores, y)
    model.backward(dscores)
    if train:
        assert 0.3 < model[12].last_mask.mean() < 0.7
    tscores = tnet(torch.from_numpy(x))
    tloss = torch.nn.functional.cross_entropy(tscores, torch.from_numpy(y))
    tloss.backward()
    assert abs(loss - tloss.item()) <= tol * abs(tloss.item()), (loss, tloss.item())
    assert np.abs(scores - tscores.detach().numpy()).max() <= tol * np.abs(tscores.detach().numpy()).max()
    for n, p in model.named_parameters():
        ref = tnet.get_parameter(n).grad.numpy()
        err = np.abs(p.grad - ref).max()
        assert err <= tol * np.abs(ref).max(), f"{n}: max err {err:.3e} vs scale {np.abs(ref).max():.3e}"


def test_reference_net_passes_gradcheck():
    model, _ = build(np.float32)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
    report = ck.gradcheck(model, x, np.array([3, 7]), max_coords=6)
    assert report.ok
    assert len(report.rows) == 1 + 10 and all(r["checked"] == 6 for r in report.rows)
