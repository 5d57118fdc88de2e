# The torch.nn layers a PyTorch user reaches for, each against its torch.nn twin (same weights): forward in
# float64 within 1e-12 and the input and parameter gradients within 1e-10, float32 within 1e-5, ck.gradcheck in
# float64, a config round trip through the registry and through a saved file, the exports, and the argument
# errors. "Within" is normwise per tensor: max|ours - torch| <= tol * max|torch|.
import math

import numpy as np
import pytest

import cnnkit as ck
import cnnkit.functional as F
from cnnkit._registry import _layer_config, _layer_from_config
from cnnkit.layers._special import erf

from helpers.torch_compare import close

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

# dtype -> (forward tolerance, gradient tolerance)
TOL = {np.float64: (1e-12, 1e-10), np.float32: (1e-5, 1e-5)}
DTYPES = [np.float64, np.float32]


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def twin(layer, tmod, x, dtype, train=True, steps=2):
    """Layer and torch twin on the same input and weights: y, dx and every parameter gradient compared. Two
    backward passes without zeroing, so parameter gradients must accumulate (+=) as torch's do."""
    ftol, gtol = TOL[dtype]
    x = np.ascontiguousarray(x, dtype=dtype)
    layer.to(dtype).train(train)
    layer.zero_grad()
    tmod = tmod.to(torch.float64 if dtype == np.float64 else torch.float32).train(train)
    with torch.no_grad():
        for n, p in layer.named_parameters():
            getattr(tmod, n).copy_(torch.from_numpy(p.data.copy()))
    tparams = dict(tmod.named_parameters())
    name = type(layer).__name__
    for step in range(steps):
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        y = layer(x)
        ty = tmod(tx)
        close(y, ty, ftol, f"{name} forward {np.dtype(dtype)}")
        dy = np.random.default_rng(5 + step).standard_normal(y.shape).astype(dtype)
        dx = layer.backward(dy)
        ty.backward(torch.from_numpy(dy))
        close(dx, tx.grad, gtol, f"{name} dx {np.dtype(dtype)}")
        for n, p in layer.named_parameters():
            close(p.grad, tparams[n].grad, gtol, f"{name} d{n} {np.dtype(dtype)} step {step}")
    return tmod


# (id, ck layer, torch twin, input shape, input scale)
ACTIVATIONS = [
    ("tanh", lambda: ck.Tanh(), lambda: torch.nn.Tanh(), (3, 4, 5), 2.0),
    ("sigmoid", lambda: ck.Sigmoid(), lambda: torch.nn.Sigmoid(), (3, 4, 5), 6.0),
    ("silu", lambda: ck.SiLU(), lambda: torch.nn.SiLU(), (3, 4, 5), 4.0),
    ("elu", lambda: ck.ELU(), lambda: torch.nn.ELU(), (3, 4, 5), 3.0),
    ("elu_alpha", lambda: ck.ELU(alpha=0.7), lambda: torch.nn.ELU(alpha=0.7), (2, 3, 4, 4), 3.0),
    ("gelu", lambda: ck.GELU(), lambda: torch.nn.GELU(), (3, 4, 5), 3.0),
    ("gelu_tanh", lambda: ck.GELU(approximate="tanh"), lambda: torch.nn.GELU(approximate="tanh"), (3, 4, 5), 3.0),
    ("softmax", lambda: ck.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1), (4, 6), 5.0),
    ("softmax_last", lambda: ck.Softmax(dim=-1), lambda: torch.nn.Softmax(dim=-1), (2, 3, 5), 5.0),
    ("softmax_dim0", lambda: ck.Softmax(0), lambda: torch.nn.Softmax(0), (4, 3), 2.0),
    ("log_softmax", lambda: ck.LogSoftmax(dim=1), lambda: torch.nn.LogSoftmax(dim=1), (4, 6), 5.0),
    ("log_softmax_4d", lambda: ck.LogSoftmax(dim=1), lambda: torch.nn.LogSoftmax(dim=1), (2, 3, 2, 2), 3.0),
    ("identity", lambda: ck.Identity(), lambda: torch.nn.Identity(), (3, 4, 5), 1.0),
    ("prelu", lambda: ck.PReLU(), lambda: torch.nn.PReLU(), (3, 4, 5), 1.0),
    ("prelu_channels", lambda: ck.PReLU(4, init=0.1), lambda: torch.nn.PReLU(4, init=0.1), (3, 4, 3, 2), 1.0),
    ("prelu_2d", lambda: ck.PReLU(5), lambda: torch.nn.PReLU(5), (6, 5), 1.0),
]
ACT_IDS = [c[0] for c in ACTIVATIONS]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ACTIVATIONS, ids=ACT_IDS)
def test_activation_matches_torch(case, dtype):
    _, make, tmake, shape, scale = case
    layer = make()
    if layer.parameters():     # weights off their initial value, different per channel
        w = layer.parameters()[0]
        w.data[:] = np.linspace(-0.5, 0.8, w.size).astype(w.dtype)
    twin(layer, tmake(), rnd(*shape) * scale, dtype)


@pytest.mark.parametrize("case", ACTIVATIONS, ids=ACT_IDS)
def test_activation_passes_gradcheck(case):
    _, make, _, shape, scale = case
    layer = make()
    report = ck.gradcheck(layer, rnd(*shape, seed=9) * scale, max_coords=16)
    assert report.ok and report.kinks == 0
    assert sum(r["checked"] for r in report.rows) == \
        sum(min(16, p.size) for p in layer.parameters()) + min(16, int(np.prod(shape)))


@pytest.mark.parametrize("case", ACTIVATIONS, ids=ACT_IDS)
def test_config_round_trips_through_the_registry_and_a_file(case, tmp_path):
    _, make, _, shape, _ = case
    layer = make()
    back = _layer_from_config(_layer_config("act", layer))
    assert type(back) is type(layer) and back.config() == layer.config()
    x = rnd(*shape, seed=3).astype(np.float32)
    model = ck.Sequential(make())
    if model.parameters():
        model.parameters()[0].data[:] = 0.3
    model.eval()
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = ck.load(path).eval()
    assert type(loaded[0]) is type(model[0]) and loaded[0].config() == model[0].config()
    np.testing.assert_array_equal(loaded(x), model(x))


@pytest.mark.parametrize("name", ["Tanh", "Sigmoid", "SiLU", "ELU", "GELU", "Softmax", "LogSoftmax", "Identity",
                                  "PReLU"])
def test_exported_at_top_level_in_nn_and_registered(name):
    cls = getattr(ck, name)
    assert getattr(ck.nn, name) is cls and getattr(ck.layers, name) is cls
    assert name in ck.__all__ and name in ck.nn.__all__ and name in ck.layers.__all__
    from cnnkit._registry import _REGISTRY
    assert _REGISTRY[name] is cls


def test_config_values():
    assert ck.ELU(alpha=0.5).config() == {"alpha": 0.5}
    assert ck.GELU(approximate="tanh").config() == {"approximate": "tanh"}
    assert ck.Softmax(dim=-1).config() == {"dim": -1}
    assert ck.LogSoftmax(2).config() == {"dim": 2}
    assert ck.PReLU(3, init=0.5, dtype=np.float64).config() == {"num_parameters": 3, "init": 0.5, "dtype": "float64"}
    p = ck.PReLU(3, init=0.5)
    assert p.weight.shape == (3,) and p.weight.dtype == np.float32 and np.all(p.weight.data == 0.5)


def test_prelu_weight_loads_from_a_torch_state_dict():
    tm = torch.nn.PReLU(4)
    with torch.no_grad():
        tm.weight.copy_(torch.tensor([0.1, -0.2, 0.3, 0.4]))
    layer = ck.PReLU(4)
    ck.zoo.load_torch_state_dict(ck.Sequential(layer), {"0.weight": tm.weight.detach()})
    np.testing.assert_array_equal(layer.weight.data, np.float32([0.1, -0.2, 0.3, 0.4]))


@pytest.mark.parametrize("make,exc,message", [
    (lambda: ck.Softmax(), TypeError, r"Softmax: dim is required .*got None"),
    (lambda: ck.LogSoftmax(dim=None), TypeError, r"LogSoftmax: dim is required .*got None"),
    (lambda: ck.Softmax(dim=1.5), TypeError, r"Softmax: dim must be an int, got float"),
    (lambda: ck.ELU(alpha="1"), TypeError, r"ELU: alpha must be a number, got str"),
    (lambda: ck.ELU(alpha=float("nan")), ValueError, r"ELU: alpha must be finite, got nan"),
    (lambda: ck.PReLU(0), ValueError, r"PReLU: num_parameters must be a positive int, got 0"),
    (lambda: ck.PReLU(2.0), ValueError, r"PReLU: num_parameters must be a positive int, got 2\.0"),
    (lambda: ck.PReLU(init="a"), TypeError, r"PReLU: init must be a number, got str"),
    (lambda: ck.GELU(approximate="fast"), ValueError,
     r"GELU: approximate must be 'none' or 'tanh', got 'fast'"),
    (lambda: ck.GELU(approximate=None), ValueError, r"GELU: approximate must be 'none' or 'tanh', got None"),
])
def test_bad_arguments_name_the_argument(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_bad_inputs_name_the_layer():
    with pytest.raises(ValueError, match=r"Softmax: dim must be in \[-2, 1\] for a 2-D input, got 2"):
        ck.Softmax(dim=2)(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"PReLU: expects 3 channels \(input dimension 1\), got shape \(2, 4\)"):
        ck.PReLU(3)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"PReLU: expects 3 channels \(input dimension 1\), got shape \(5,\)"):
        ck.PReLU(3)(np.zeros(5, np.float32))
    with pytest.raises(TypeError, match=r"Tanh: input must be float32 or float64, got int64"):
        ck.Tanh()(np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match=r"PReLU: input dtype float64 does not match the parameters' float32"):
        ck.PReLU()(np.zeros((2, 3)))


def test_activations_keep_float32_and_take_extreme_values():
    x = np.array([[-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):     # no overflow on either side
        for layer in (ck.Sigmoid(), ck.SiLU(), ck.ELU(), ck.Tanh(), ck.GELU(), ck.Softmax(1), ck.LogSoftmax(1)):
            y = layer(x)
            assert y.dtype == np.float32 and np.all(np.isfinite(y)), type(layer).__name__
            dx = layer.backward(np.ones_like(y))
            assert dx.dtype == np.float32 and np.all(np.isfinite(dx)), type(layer).__name__
    np.testing.assert_array_equal(ck.Sigmoid()(x)[0, [0, 3, 6]], np.float32([0.0, 0.5, 1.0]))


def test_prelu_gradient_accumulates():
    layer = ck.PReLU(2, dtype=np.float64)
    x = rnd(3, 2, 4)
    dy = rnd(3, 2, 4, seed=1)
    layer(x)
    layer.backward(dy)
    g1 = layer.weight.grad.copy()
    np.testing.assert_allclose(g1, np.where(x > 0, 0.0, x * dy).sum(axis=(0, 2)), rtol=1e-14)
    layer(x)
    layer.backward(dy, need_dx=False)
    np.testing.assert_allclose(layer.weight.grad, 2 * g1, rtol=1e-14)


def test_identity_passes_values_through():
    x = rnd(2, 3)
    layer = ck.Identity(54, unused=0.1)     # torch's Identity takes and ignores any arguments
    assert layer(x) is x and layer.config() == {}
    dy = rnd(2, 3, seed=1)
    assert layer.backward(dy) is dy


@pytest.mark.parametrize("op,layer", [
    (lambda x: F.sigmoid(x), ck.Sigmoid()), (lambda x: F.tanh(x), ck.Tanh()), (lambda x: F.gelu(x), ck.GELU()),
    (lambda x: F.gelu(x, approximate="tanh"), ck.GELU(approximate="tanh")),
    (lambda x: F.softmax(x, dim=1), ck.Softmax(1)), (lambda x: F.log_softmax(x, dim=-1), ck.LogSoftmax(-1)),
])
def test_functional_ops_run_the_layer_code(op, layer):
    x = ck.Tensor(rnd(3, 5) * 3, requires_grad=True)
    y = op(x)
    np.testing.assert_array_equal(y.data, layer(x.data))
    dy = rnd(3, 5, seed=2)
    y.backward(dy)
    np.testing.assert_array_equal(x.grad, layer.backward(dy))


def test_erf_matches_math_erf_to_float64_rounding():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-0.5, 0.5, 30000), rng.uniform(-4.5, 4.5, 40000), rng.uniform(-7, 7, 20000),
                        rng.uniform(-30, 30, 9980), [0.0, -0.0, 0.46875, -0.46875, 4.0, -4.0, 1e-300, -1e-20,
                                                     5.9, 6.0, 26.5, 27.0, 100.0, -1e300, np.inf, -np.inf,
                                                     1e-8, 0.5, 0.4687, 3.999]])
    assert x.size == 100000
    ref = np.array([math.erf(v) for v in x])
    got = erf(x)
    assert got.dtype == np.float64 and got.shape == x.shape
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-300)
    assert rel.max() < 1e-15, (rel.max(), x[rel.argmax()])
    assert np.isnan(erf(np.array([np.nan]))[0])
    x32 = np.clip(x, -1e30, 1e30).astype(np.float32)
    got32 = erf(x32)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, [math.erf(v) for v in x32.astype(np.float64)], rtol=5e-7, atol=1e-7)


# ---------------------------------------------------------------- ReLU(inplace=), Flatten(start_dim, end_dim)

@pytest.mark.parametrize("inplace", [False, True])
def test_relu_takes_torch_inplace_keyword_and_leaves_the_input_alone(inplace):
    x = rnd(3, 4)
    keep = x.copy()
    layer = ck.ReLU(inplace=inplace)
    y = layer(x)
    np.testing.assert_array_equal(y, np.maximum(keep, 0))
    np.testing.assert_array_equal(x, keep)            # ignored: a new array either way
    assert ck.ReLU(inplace).config() == {}            # nothing to save: the flag changes nothing
    twin(ck.ReLU(inplace=inplace), torch.nn.ReLU(), rnd(2, 3, 4), np.float64, steps=1)
    with pytest.raises(TypeError, match=r"ReLU: inplace must be a bool, got int"):
        ck.ReLU(inplace=1)


FLATTENS = [dict(), dict(start_dim=1), dict(start_dim=2), dict(start_dim=1, end_dim=2), dict(start_dim=0),
            dict(start_dim=-3, end_dim=-2), dict(start_dim=0, end_dim=0), dict(start_dim=3, end_dim=-1),
            dict(start_dim=2, end_dim=1 + 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", FLATTENS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_flatten_matches_torch(kw, dtype):
    twin(ck.Flatten(**kw), torch.nn.Flatten(**kw), rnd(2, 3, 4, 5), dtype, steps=1)
    report = ck.gradcheck(ck.Flatten(**kw), rnd(2, 3, 2, 2, seed=4), max_coords=8)
    assert report.ok


def test_flatten_config_keeps_the_default_and_round_trips_new_keys(tmp_path):
    assert ck.Flatten().config() == {}                          # as before: old files and new ones alike
    assert ck.Flatten(start_dim=1, end_dim=-1).config() == {}
    assert ck.Flatten(start_dim=2).config() == {"start_dim": 2}
    assert ck.Flatten(end_dim=2).config() == {"end_dim": 2}
    for kw in FLATTENS:
        layer = ck.Flatten(**kw)
        back = _layer_from_config(_layer_config("f", layer))
        assert type(back) is ck.Flatten and (back.start_dim, back.end_dim) == (layer.start_dim, layer.end_dim)
    model = ck.Sequential(ck.Flatten(start_dim=2, end_dim=3), ck.Flatten(1, -2))
    x = rnd(2, 3, 4, 5, 6).astype(np.float32)
    path = tmp_path / "f.safetensors"
    model.save(path)
    loaded = ck.load(path)
    assert loaded[0].config() == {"start_dim": 2, "end_dim": 3} and loaded[1].config() == {"end_dim": -2}
    y = loaded(x)
    assert y.shape == (2, 60, 6)
    np.testing.assert_array_equal(y, model(x))


def test_flatten_bad_arguments_and_inputs():
    with pytest.raises(TypeError, match=r"Flatten: start_dim must be an int, got float"):
        ck.Flatten(start_dim=1.0)
    with pytest.raises(TypeError, match=r"Flatten: end_dim must be an int, got str"):
        ck.Flatten(end_dim="-1")
    with pytest.raises(ValueError, match=r"Flatten: start_dim \(3\) must not come after end_dim \(1\)"):
        ck.Flatten(3, 1)
    with pytest.raises(ValueError, match=r"Flatten: start_dim \(-1\) must not come after end_dim \(-2\)"):
        ck.Flatten(-1, -2)
    with pytest.raises(ValueError, match=r"Flatten: input must have a batch dimension and at least one more, got shape \(4,\)"):
        ck.Flatten()(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"Flatten: start_dim must be in \[-3, 2\] for a 3-D input, got 3"):
        ck.Flatten(start_dim=3)(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"Flatten: start_dim \(2\) must not come after end_dim \(-2\) for a 3-D input"):
        ck.Flatten(2, -2)(np.zeros((2, 3, 4), np.float32))


# ---------------------------------------------------------------- LayerNorm, GroupNorm, InstanceNorm2d

# (id, ck layer, torch twin, input shape)
NORMS = [
    ("ln_last", lambda: ck.LayerNorm(5), lambda: torch.nn.LayerNorm(5), (3, 4, 5)),
    ("ln_two", lambda: ck.LayerNorm([4, 5]), lambda: torch.nn.LayerNorm([4, 5]), (3, 4, 5)),
    ("ln_chw", lambda: ck.LayerNorm((3, 4, 4), eps=1e-3), lambda: torch.nn.LayerNorm((3, 4, 4), eps=1e-3),
     (2, 3, 4, 4)),
    ("ln_plain", lambda: ck.LayerNorm(6, elementwise_affine=False),
     lambda: torch.nn.LayerNorm(6, elementwise_affine=False), (4, 6)),
    ("ln_nobias", lambda: ck.LayerNorm(6, bias=False), lambda: torch.nn.LayerNorm(6, bias=False), (4, 6)),
    ("gn", lambda: ck.GroupNorm(2, 6), lambda: torch.nn.GroupNorm(2, 6), (3, 6, 4, 4)),
    ("gn_3d_plain", lambda: ck.GroupNorm(3, 6, affine=False), lambda: torch.nn.GroupNorm(3, 6, affine=False),
     (2, 6, 5)),
    ("gn_one", lambda: ck.GroupNorm(1, 4, eps=1e-4), lambda: torch.nn.GroupNorm(1, 4, eps=1e-4), (2, 4, 3, 3)),
    # (N, C): 3 values per group (with 2, dx is a cancellation to ~1e-5 of dy, float32 rounding noise)
    ("gn_2d", lambda: ck.GroupNorm(2, 6), lambda: torch.nn.GroupNorm(2, 6), (3, 6)),
    ("gn_per_channel", lambda: ck.GroupNorm(4, 4), lambda: torch.nn.GroupNorm(4, 4), (2, 4, 3, 2)),
    ("in", lambda: ck.InstanceNorm2d(3), lambda: torch.nn.InstanceNorm2d(3), (2, 3, 4, 5)),
    ("in_affine", lambda: ck.InstanceNorm2d(3, affine=True), lambda: torch.nn.InstanceNorm2d(3, affine=True),
     (2, 3, 4, 5)),
]
NORM_IDS = [c[0] for c in NORMS]


def _move_weights(layer):
    for i, p in enumerate(layer.parameters()):       # off 1 / 0, different per element
        p.data[...] = np.linspace(-1.5, 2.0 + i, p.size).reshape(p.shape).astype(p.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("case", NORMS, ids=NORM_IDS)
def test_norm_matches_torch(case, train, dtype):
    _, make, tmake, shape = case
    layer = make()
    _move_weights(layer)
    twin(layer, tmake(), rnd(*shape) * 3 + 1, dtype, train=train)


@pytest.mark.parametrize("case", NORMS, ids=NORM_IDS)
def test_norm_passes_gradcheck(case):
    _, make, _, shape = case
    layer = make()
    _move_weights(layer)
    report = ck.gradcheck(layer, rnd(*shape, seed=9) * 2, max_coords=16)
    assert report.ok and report.kinks == 0
    assert sum(r["checked"] for r in report.rows) == \
        sum(min(16, p.size) for p in layer.parameters()) + min(16, int(np.prod(shape)))


@pytest.mark.parametrize("case", NORMS, ids=NORM_IDS)
def test_norm_state_dict_is_torchs_and_loads_and_config_round_trips(case, tmp_path):
    _, make, tmake, shape = case
    tm = tmake().double()
    with torch.no_grad():
        for p in tm.parameters():
            p.copy_(torch.randn(p.shape, dtype=torch.float64))
    model = ck.Sequential(make()).to(np.float64)
    assert set(model.state_dict()) == {"0." + k for k in tm.state_dict()}
    ck.zoo.load_torch_state_dict(model, {"0." + k: v for k, v in tm.state_dict().items()})
    x = rnd(*shape, seed=4)
    close(model(x), tm(torch.from_numpy(x)), 1e-12, f"{case[0]} after torch state dict")
    layer = model[0]
    back = _layer_from_config(_layer_config("n", layer))
    assert type(back) is type(layer) and back.config() == layer.config()
    path = tmp_path / "n.safetensors"
    model.save(path)
    np.testing.assert_array_equal(ck.load(path)(x), model(x))


@pytest.mark.parametrize("name", ["LayerNorm", "GroupNorm", "InstanceNorm2d"])
def test_norms_exported_at_top_level_in_nn_and_registered(name):
    from cnnkit._registry import _REGISTRY
    cls = getattr(ck, name)
    assert getattr(ck.nn, name) is cls and getattr(ck.layers, name) is cls and _REGISTRY[name] is cls
    assert name in ck.__all__ and name in ck.nn.__all__ and name in ck.layers.__all__


def test_norm_configs_and_parameters():
    ln = ck.LayerNorm([4, 5], eps=1e-3, dtype=np.float64)
    assert ln.config() == {"normalized_shape": [4, 5], "eps": 1e-3, "elementwise_affine": True, "bias": True,
                           "dtype": "float64"}
    assert ln.weight.shape == (4, 5) and np.all(ln.weight.data == 1) and np.all(ln.bias.data == 0)
    assert ck.LayerNorm(3, elementwise_affine=False).parameters() == []
    assert [n for n, _ in ck.LayerNorm(3, bias=False).named_parameters()] == ["weight"]
    gn = ck.GroupNorm(2, 6)
    assert gn.config() == {"num_groups": 2, "num_channels": 6, "eps": 1e-5, "affine": True, "dtype": "float32"}
    assert gn.weight.shape == (6,) and gn.bias.shape == (6,)
    inn = ck.InstanceNorm2d(3)
    assert inn.config() == {"num_features": 3, "eps": 1e-5, "momentum": 0.1, "affine": False,
                            "track_running_stats": False, "dtype": "float32"}
    assert inn.parameters() == [] and inn._buffers == {}


def test_norm_parameter_grads_accumulate():
    layer = ck.GroupNorm(2, 4, dtype=np.float64)
    x, dy = rnd(3, 4, 2, 2), rnd(3, 4, 2, 2, seed=1)
    layer(x)
    layer.backward(dy)
    gw, gb = layer.weight.grad.copy(), layer.bias.grad.copy()
    np.testing.assert_allclose(gb, dy.sum(axis=(0, 2, 3)), rtol=1e-14)
    layer(x)
    layer.backward(dy, need_dx=False)
    np.testing.assert_allclose(layer.weight.grad, 2 * gw, rtol=1e-14)
    np.testing.assert_allclose(layer.bias.grad, 2 * gb, rtol=1e-14)
    layer.weight.requires_grad = False
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * gw, rtol=1e-14)     # frozen: not touched


@pytest.mark.parametrize("make,exc,message", [
    (lambda: ck.GroupNorm(4, 6), ValueError, r"GroupNorm: num_channels \(6\) must be divisible by num_groups \(4\)"),
    (lambda: ck.GroupNorm(0, 6), ValueError, r"GroupNorm: num_groups must be a positive int, got 0"),
    (lambda: ck.GroupNorm(2, 6, eps=-1.0), ValueError, r"GroupNorm: eps must be >= 0, got -1\.0"),
    (lambda: ck.GroupNorm(2, 6, affine="yes"), TypeError, r"GroupNorm: affine must be a bool, got str"),
    (lambda: ck.LayerNorm(0), ValueError, r"LayerNorm: normalized_shape must be a positive int or a non-empty "
                                          r"list of positive ints, got 0"),
    (lambda: ck.LayerNorm([]), ValueError, r"LayerNorm: normalized_shape must be .*, got \[\]"),
    (lambda: ck.LayerNorm((4, 2.5)), ValueError, r"LayerNorm: normalized_shape must be .*, got \(4, 2\.5\)"),
    (lambda: ck.LayerNorm("4"), ValueError, r"LayerNorm: normalized_shape must be .*, got '4'"),
    (lambda: ck.LayerNorm(4, elementwise_affine=1), TypeError, r"LayerNorm: elementwise_affine must be a bool"),
    (lambda: ck.InstanceNorm2d(3, track_running_stats=True), ValueError,
     r"InstanceNorm2d: track_running_stats=True is not supported .*got True"),
    (lambda: ck.InstanceNorm2d(0), ValueError, r"InstanceNorm2d: num_features must be a positive int, got 0"),
    (lambda: ck.InstanceNorm2d(3, momentum=2.0), ValueError, r"InstanceNorm2d: momentum must be <= 1, got 2\.0"),
])
def test_norm_bad_arguments_name_the_argument(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_norm_bad_inputs_name_the_argument():
    f32 = np.float32
    with pytest.raises(ValueError, match=r"GroupNorm: expects num_channels = 6 channels \(input dimension 1\), "
                                         r"got shape \(2, 4, 3, 3\)"):
        ck.GroupNorm(2, 6)(np.zeros((2, 4, 3, 3), f32))
    with pytest.raises(ValueError, match=r"GroupNorm: input must be at least 2-D \(N, C, \.\.\.\), got shape \(6,\)"):
        ck.GroupNorm(2, 6)(np.zeros(6, f32))
    with pytest.raises(ValueError, match=r"InstanceNorm2d: expects num_features = 3 channels \(input dimension 1\), "
                                         r"got shape \(2, 4, 3, 3\)"):
        ck.InstanceNorm2d(3)(np.zeros((2, 4, 3, 3), f32))
    with pytest.raises(ValueError, match=r"InstanceNorm2d: input must be 4-D \(N, C, H, W\), got shape \(2, 3, 3\)"):
        ck.InstanceNorm2d(3)(np.zeros((2, 3, 3), f32))
    with pytest.raises(ValueError, match=r"LayerNorm: input's last dimensions must be normalized_shape \(4, 5\), "
                                         r"got shape \(2, 5, 4\)"):
        ck.LayerNorm([4, 5])(np.zeros((2, 5, 4), f32))
    with pytest.raises(ValueError, match=r"LayerNorm: input's last dimensions must be normalized_shape \(3, 4, 5\), "
                                         r"got shape \(4, 5\)"):
        ck.LayerNorm([3, 4, 5])(np.zeros((4, 5), f32))
    with pytest.raises(TypeError, match=r"LayerNorm.*input dtype float64 does not match the parameters' float32"):
        ck.LayerNorm(5)(np.zeros((2, 5)))
