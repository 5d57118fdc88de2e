# The checks every layer makes on what it is given, as the kernels make them: inputs are float32 or float64
# arrays (of one dtype across the inputs of Add and Concat), backward's dy has the forward output's shape and
# dtype. Run over every layer class the library defines (the table must name them all), since array glue
# would otherwise take ints (LeakyReLU(0.5) on int32 [[-4, 2]] gave [[0, 2]]) and broadcast a mis-shaped dy.
# Plus the constructor arguments: flags are real bools, numbers real finite numbers in their ranges.
import re

import numpy as np
import pytest

import cnnkit as ck
from cnnkit._registry import _REGISTRY
from cnnkit.zoo.layers import AdaptiveAvgPool2d, ShortcutA


def _graph():
    x = ck.Input((3,))
    return ck.Graph(x, ck.LeakyReLU(0.1)(ck.Linear(3, 4, seed=0)(x)))


# class name -> (constructor, input shapes)
CASES = {
    "Conv2d": (lambda: ck.Conv2d(2, 3, 3, seed=0), [(2, 2, 5, 5)]),
    "MaxPool2d": (lambda: ck.MaxPool2d(2), [(2, 2, 4, 4)]),
    "AvgPool2d": (lambda: ck.AvgPool2d(2), [(2, 2, 4, 4)]),
    "GlobalAvgPool2d": (lambda: ck.GlobalAvgPool2d(), [(2, 2, 3, 3)]),
    "FractionalMaxPool2d": (lambda: ck.FractionalMaxPool2d(2, output_size=2), [(2, 2, 5, 5)]),
    "ReLU": (lambda: ck.ReLU(), [(2, 3)]),
    "LeakyReLU": (lambda: ck.LeakyReLU(0.5), [(2, 3)]),
    "Linear": (lambda: ck.Linear(3, 2, seed=0), [(2, 3)]),
    "DropConnect": (lambda: ck.DropConnect(3, 2, seed=0), [(2, 3)]),
    "Flatten": (lambda: ck.Flatten(), [(2, 2, 2)]),
    "Dropout": (lambda: ck.Dropout(0.5), [(2, 3)]),
    "StochasticDepth": (lambda: ck.StochasticDepth(0.5), [(4, 3)]),
    "BatchNorm1d": (lambda: ck.BatchNorm1d(3), [(4, 3)]),
    "BatchNorm2d": (lambda: ck.BatchNorm2d(2), [(2, 2, 3, 3)]),
    "SyncBatchNorm": (lambda: ck.SyncBatchNorm(2), [(2, 2, 3, 3)]),
    "LocalResponseNorm": (lambda: ck.LocalResponseNorm(3), [(2, 4, 3, 3)]),
    "LocallyConnected2d": (lambda: ck.LocallyConnected2d(2, 3, 3, (5, 5), seed=0), [(2, 2, 5, 5)]),
    "Add": (lambda: ck.Add(), [(2, 3), (2, 3)]),
    "Concat": (lambda: ck.Concat(), [(2, 3), (2, 2)]),
    "AdaptiveAvgPool2d": (lambda: AdaptiveAvgPool2d(2), [(2, 2, 5, 5)]),
    "ShortcutA": (lambda: ShortcutA(2, 1), [(2, 2, 4, 4)]),
    "Sequential": (lambda: ck.Sequential(ck.Linear(3, 2, seed=0), ck.ReLU()), [(2, 3)]),
    "Graph": (_graph, [(2, 3)]),
}
# torch.nn's activations and per-sample normalisations
CASES.update({
    "Tanh": (lambda: ck.Tanh(), [(2, 3)]),
    "Sigmoid": (lambda: ck.Sigmoid(), [(2, 3)]),
    "SiLU": (lambda: ck.SiLU(), [(2, 3)]),
    "ELU": (lambda: ck.ELU(), [(2, 3)]),
    "GELU": (lambda: ck.GELU(), [(2, 3)]),
    "Softmax": (lambda: ck.Softmax(dim=1), [(2, 3)]),
    "LogSoftmax": (lambda: ck.LogSoftmax(dim=1), [(2, 3)]),
    "Identity": (lambda: ck.Identity(), [(2, 3)]),
    "PReLU": (lambda: ck.PReLU(3), [(2, 3)]),
    "LayerNorm": (lambda: ck.LayerNorm(3), [(2, 3)]),
    "GroupNorm": (lambda: ck.GroupNorm(2, 4), [(2, 4, 3)]),
    "InstanceNorm2d": (lambda: ck.InstanceNorm2d(2, affine=True), [(2, 2, 3, 3)]),
    "ConvTranspose2d": (lambda: ck.ConvTranspose2d(2, 3, 3, stride=2, seed=0), [(2, 2, 3, 3)]),
    "ZeroPad2d": (lambda: ck.ZeroPad2d((1, 0, 2, 1)), [(2, 2, 3, 3)]),
    "Upsample": (lambda: ck.Upsample(scale_factor=2), [(2, 2, 3, 3)]),
    "Dropout2d": (lambda: ck.Dropout2d(0.5), [(2, 3, 2, 2)]),
    "AdaptiveMaxPool2d": (lambda: ck.AdaptiveMaxPool2d(2), [(2, 2, 5, 5)]),
})
BAD_DTYPES = [np.int32, np.bool_, np.float16, np.complex64]


def test_the_table_covers_every_layer_class():
    ours = {n for n, c in _REGISTRY.items() if c.__module__.startswith("cnnkit.") and not n.startswith("_")}
    assert ours - {"Model"} == set(CASES)


def _inputs(shapes, dtype):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(s) * 3).astype(dtype) for s in shapes]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("train", [True, False])
def test_every_layer_takes_only_float32_or_float64(name, dtype, train):
    make, shapes = CASES[name]
    layer = make().train(train)
    xs = _inputs(shapes, dtype)
    which = "input" if len(xs) == 1 else "input 0"
    with pytest.raises(TypeError, match=rf"^{name}: {which} must be float32 or float64, got {np.dtype(dtype)}"):
        layer(*xs)
    with pytest.raises(TypeError, match=rf"^{name}: {which} must be float32 or float64"):
        layer.forward(*xs)          # what a model calls: the check is in forward, not only in __call__


def test_leaky_relu_on_ints_is_refused_not_truncated():
    with pytest.raises(TypeError, match=r"LeakyReLU: input must be float32 or float64, got int32"):
        ck.LeakyReLU(0.5)(np.array([[-4, 2]], np.int32))
    np.testing.assert_array_equal(ck.LeakyReLU(0.5)(np.array([[-4, 2]], np.float64)), [[-2.0, 2.0]])


@pytest.mark.parametrize("name", ["Add", "Concat"])
def test_merging_layers_take_one_dtype(name):
    make, shapes = CASES[name]
    a, b = _inputs(shapes, np.float64)
    with pytest.raises(TypeError, match=rf"{name}: every input must have one dtype \(no silent casts\), "
                                        rf"got \['float64', 'float32'\]"):
        make()(a, b.astype(np.float32))
    with pytest.raises(TypeError, match=rf"{name}: input 1 must be float32 or float64, got int32"):
        make()(a, b.astype(np.int32))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_layer_checks_the_shape_and_dtype_of_dy(name):
    make, shapes = CASES[name]
    layer = make().to(np.float64)
    y = layer(*_inputs(shapes, np.float64))
    out = y.shape
    for bad in [out[1:], (1,) + out[1:], out[:-1] + (out[-1] + 1,)]:   # the first two would broadcast
        with pytest.raises(ValueError, match=rf"^{name}: dy must have the shape of the forward output "
                                             rf"{re.escape(str(out))}, got {re.escape(str(bad))}"):
            layer.backward(np.ones(bad))
    for dtype in [np.float32, np.int64, np.bool_]:
        with pytest.raises(TypeError, match=rf"^{name}: dy must have the dtype of the forward output \(float64; "
                                            rf"no silent casts\), got {np.dtype(dtype)}"):
            layer.backward(np.ones(out, dtype))
    with pytest.raises(TypeError, match=rf"^{name}: dy must be a numpy array \(or a CuPy array on a GPU\), got list"):
        layer.backward(np.ones(out).tolist())
    dx = layer.backward(np.ones(out), need_dx=True)     # a refused dy leaves the forward's cache in place
    dxs = dx if isinstance(dx, tuple) else (dx,)
    assert [d.shape for d in dxs] == [tuple(s) for s in shapes]
    assert all(d.dtype == np.float64 for d in dxs)


# ---------------------------------------------------------------- constructor arguments
NAN = float("nan")
S = np.zeros((2, 3))
LABELS = np.array([0, 1])


@pytest.mark.parametrize("make, exc, message", [
    # flags: bool("no") is True, so only bool and numpy.bool_ pass
    (lambda: ck.MaxPool2d(2, ceil_mode="no"), TypeError, r"MaxPool2d: ceil_mode must be a bool, got str"),
    (lambda: ck.MaxPool2d(2, ceil_mode=1), TypeError, r"MaxPool2d: ceil_mode must be a bool, got int"),
    (lambda: ck.AvgPool2d(2, count_include_pad="no"), TypeError, r"AvgPool2d: count_include_pad must be a bool, got str"),
    (lambda: ck.BatchNorm2d(3, affine="no"), TypeError, r"BatchNorm2d: affine must be a bool, got str"),
    (lambda: ck.BatchNorm1d(3, track_running_stats=None), TypeError,
     r"BatchNorm1d: track_running_stats must be a bool, got NoneType"),
    (lambda: ck.Conv2d(1, 2, 3, bias="no"), TypeError, r"Conv2d: bias must be a bool, got str"),
    (lambda: ck.Linear(2, 2, bias="no"), TypeError, r"Linear: bias must be a bool, got str"),
    (lambda: ck.DropConnect(2, 2, bias=0), TypeError, r"DropConnect: bias must be a bool, got int"),
    (lambda: ck.LocallyConnected2d(1, 2, 3, 5, bias="no"), TypeError, r"LocallyConnected2d: bias must be a bool, got str"),
    (lambda: ck.ReLU().train("no"), TypeError, r"ReLU.train: mode must be a bool, got str"),
    (lambda: ck.Linear(2, 2).requires_grad_("no"), TypeError, r"Linear.requires_grad_: requires_grad must be a bool, got str"),
    # numbers: real (not str, not bool), finite, in range
    (lambda: ck.LeakyReLU("0.1"), TypeError, r"LeakyReLU: negative_slope must be a number, got str"),
    (lambda: ck.LeakyReLU(True), TypeError, r"LeakyReLU: negative_slope must be a number, got bool"),
    (lambda: ck.LeakyReLU(NAN), ValueError, r"LeakyReLU: negative_slope must be finite, got nan"),
    (lambda: ck.BatchNorm2d(3, eps="1e-5"), TypeError, r"BatchNorm2d: eps must be a number, got str"),
    (lambda: ck.BatchNorm2d(3, eps=NAN), ValueError, r"BatchNorm2d: eps must be finite, got nan"),
    (lambda: ck.BatchNorm2d(3, eps=-1e-5), ValueError, r"BatchNorm2d: eps must be >= 0, got -1e-05"),
    (lambda: ck.BatchNorm1d(3, momentum="0.1"), TypeError, r"BatchNorm1d: momentum must be a number, got str"),
    (lambda: ck.BatchNorm1d(3, momentum=NAN), ValueError, r"BatchNorm1d: momentum must be finite, got nan"),
    (lambda: ck.BatchNorm1d(3, momentum=1.5), ValueError, r"BatchNorm1d: momentum must be <= 1, got 1.5"),
    (lambda: ck.BatchNorm1d(3, momentum=True), TypeError, r"BatchNorm1d: momentum must be a number, got bool"),
    (lambda: ck.LocalResponseNorm(3, alpha="1e-4"), TypeError, r"LocalResponseNorm: alpha must be a number, got str"),
    (lambda: ck.LocalResponseNorm(3, alpha=-1.0), ValueError, r"LocalResponseNorm: alpha must be >= 0, got -1.0"),
    (lambda: ck.LocalResponseNorm(3, beta=NAN), ValueError, r"LocalResponseNorm: beta must be finite, got nan"),
    (lambda: ck.LocalResponseNorm(3, k="2"), TypeError, r"LocalResponseNorm: k must be a number, got str"),
    (lambda: ck.LocalResponseNorm(3, k=float("inf")), ValueError, r"LocalResponseNorm: k must be finite, got inf"),
    (lambda: ck.LocalResponseNorm(3, k=-1), ValueError, r"LocalResponseNorm: k must be >= 0, got -1.0"),
    (lambda: ck.FractionalMaxPool2d(2, output_ratio="0.5"), TypeError,
     r"FractionalMaxPool2d: output_ratio must be a number, got str"),
    (lambda: ck.FractionalMaxPool2d(2, output_ratio=(0.5, NAN)), ValueError,
     r"FractionalMaxPool2d: output_ratio must be finite, got nan"),
    (lambda: ck.Concat(axis="1"), TypeError, r"Concat: axis must be an int, got str"),
    (lambda: ShortcutA("2", 1), TypeError, r"ShortcutA: stride must be an int, got str"),
    (lambda: ShortcutA(2, 1.5), TypeError, r"ShortcutA: pad must be an int, got float"),
    (lambda: ck.losses.softmax_cross_entropy(S, LABELS, label_smoothing="0.1"), TypeError,
     r"softmax_cross_entropy: label_smoothing must be a number, got str"),
    (lambda: ck.losses.softmax_cross_entropy(S, LABELS, label_smoothing=NAN), ValueError,
     r"softmax_cross_entropy: label_smoothing must be finite, got nan"),
    (lambda: ck.losses.softmax_cross_entropy(S, LABELS, label_smoothing=1.5), ValueError,
     r"softmax_cross_entropy: label_smoothing must be <= 1, got 1.5"),
    (lambda: ck.losses.svm_loss(S, LABELS, margin="1"), TypeError, r"svm_loss: margin must be a number, got str"),
    (lambda: ck.losses.svm_loss(S, LABELS, margin=NAN), ValueError, r"svm_loss: margin must be finite, got nan"),
    (lambda: ck.losses.svm_loss(S, LABELS, margin=True), TypeError, r"svm_loss: margin must be a number, got bool"),
])
def test_flags_are_bools_and_numbers_are_finite_reals(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_numpy_bools_and_numbers_are_taken():
    assert ck.MaxPool2d(2, ceil_mode=np.bool_(True)).ceil_mode is True
    bn = ck.BatchNorm2d(3, eps=np.float32(1e-3), momentum=None, affine=np.bool_(False))
    assert type(bn.eps) is float and bn.momentum is None and bn.affine is False and not bn._params
    assert ck.LeakyReLU(np.float64(0.25)).negative_slope == 0.25
    assert ck.LocalResponseNorm(3, alpha=1, beta=np.int64(1), k=0).config() == dict(size=3, alpha=1.0, beta=1.0, k=0.0)
    loss, _ = ck.losses.svm_loss(np.array([[0.0, 0.5]]), np.array([0]), margin=np.float32(1))
    assert loss == 1.5
    assert ck.Concat(axis=np.int64(2)).axis == 2
    layer = ck.Linear(2, 2).requires_grad_(np.bool_(False))
    assert not any(p.requires_grad for p in layer.parameters())


def test_layer_argument_checks_live_in_validate_with_the_layers_messages():
    from cnnkit._validate import check_float_dtype, check_positive_int, check_prob
    with pytest.raises(ValueError, match=re.escape("Conv2d: in_channels must be a positive int, got 0")):
        check_positive_int("Conv2d", "in_channels", 0)
    with pytest.raises(ValueError, match=re.escape("Conv2d: in_channels must be a positive int, got 0")):
        ck.Conv2d(0, 4, 3)
    assert check_positive_int("Linear", "in_features", np.int64(3)) == 3
    with pytest.raises(TypeError, match=re.escape("Dropout: p must be a float, got str")):
        check_prob("Dropout", "0.5")
    with pytest.raises(ValueError, match=re.escape("Dropout: p (the drop probability) must be in [0, 1), got 1.0")):
        ck.Dropout(1.0)
    assert check_prob("StochasticDepth", 1, hi_inclusive=True) == 1.0
    with pytest.raises(TypeError, match=re.escape("Linear: dtype must be float32 or float64, got int32")):
        check_float_dtype("Linear", np.int32)
    with pytest.raises(TypeError, match=re.escape("Linear: dtype must be float32 or float64, got int32")):
        ck.Linear(2, 2, dtype=np.int32)
    assert check_float_dtype("Linear", "float64") == np.float64
