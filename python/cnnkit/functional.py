"""cnnkit.functional (``import cnnkit.functional as F``): torch.nn.functional's ops on ck.Tensor values,
each recorded with its backward so that ``loss.backward()`` reaches through it.

An argument may be a ck.Tensor, a Parameter (its gradient accumulates into ``p.grad``) or a numpy / CuPy
array (a constant). The result is always a Tensor. Ops that have a layer (relu, leaky_relu, sigmoid, tanh,
gelu, softmax, log_softmax, max_pool2d, avg_pool2d, adaptive_avg_pool2d, dropout, interpolate) run that
layer's forward and backward, so they are the kernels, formulas and checks the layers use; the others are
written here against numpy / CuPy, in the input's dtype (float64 in, float64 out: no silent casts).

Dropout draws its masks from cnnkit's counter-based generator (Philox): one seed for the functional ops
(``F.manual_seed(s)`` sets it) and an offset advanced at every training call, so a run repeats exactly.
For a model, prefer a ck.Dropout layer: it gets its own stream from the model's seed and its path.
"""
import numbers

import numpy as np

from . import autograd as _ag
from . import ops
from . import profiler as _profiler
from ._validate import check_flag, check_int, check_pair
from ._xp import array_module, is_device_array
from .autograd import lift, record
from .layers import conv_transpose as _ct
from .layers import (AdaptiveAvgPool2d as _AdaptiveAvgPool2d, AvgPool2d as _AvgPool2d, Dropout as _Dropout,
                     LeakyReLU as _LeakyReLU, MaxPool2d as _MaxPool2d, ReLU as _ReLU)
from .layers import Upsample as _Upsample
from .layers import (GELU as _Gelu, LogSoftmax as _LogSoftmax, Sigmoid as _Sigmoid, Softmax as _Softmax,
                     Tanh as _Tanh)
from .layers._util import _contig
from .layers.conv import _conv_padding, _fold_grad, _pad_input
from .parameter import _FLOATS

_RELU = _ReLU(name="F.relu")
_SIGMOID, _TANH = _Sigmoid(name="F.sigmoid"), _Tanh(name="F.tanh")
_GELU = {m: _Gelu(m, name="F.gelu") for m in ("none", "tanh")}
_stream = {"seed": 0x5EED, "offset": 0}


def manual_seed(seed):
    """Seed the generator F.dropout draws from (offset back to 0)."""
    _stream["seed"] = check_int("F.manual_seed", "seed", seed, minimum=0)
    _stream["offset"] = 0


def _number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _float_input(op, name, t):
    if t.data.dtype not in _FLOATS:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {t.data.dtype}")


def _dim(op, name, d, ndim):
    d = check_int(op, name, d)
    if not -ndim <= d < ndim:
        raise ValueError(f"{op}: {name} must be in [{-ndim}, {ndim - 1}] for a {ndim}-D input, got {d}")
    return d % ndim


def _same(op, a_name, a, b_name, b):
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: {a_name} and {b_name} must have one dtype (no silent casts), got {a.dtype} and "
                        f"{b.dtype}")
    if is_device_array(a) != is_device_array(b):
        raise TypeError(f"{op}: {a_name} and {b_name} must be on one device, got "
                        f"{'GPU' if is_device_array(a) else 'CPU'} and {'GPU' if is_device_array(b) else 'CPU'}")


def _layer(layer, x):
    return _ag.call_layer(layer, (x,))


# ---------------------------------------------------------------- activations
def relu(x, inplace=False):
    """max(x, 0), as F.relu (the gradient at 0 is 0). ``inplace`` is accepted and ignored: a new value is made."""
    check_flag("F.relu", "inplace", inplace)
    return _layer(_RELU, x)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    check_flag("F.leaky_relu", "inplace", inplace)
    return _layer(_LeakyReLU(negative_slope, name="F.leaky_relu"), x)


def _activation(op, layer, x):
    """An op run by its layer (one formula for both): the operand lifted and checked under the op's name."""
    x = lift(x, op, "input")
    _float_input(op, "input", x)
    return _layer(layer, x)


def sigmoid(x):
    """1 / (1 + exp(-x)), as torch.sigmoid (stable on both sides); runs ck.Sigmoid."""
    return _activation("F.sigmoid", _SIGMOID, x)


def tanh(x):
    """tanh(x), as torch.tanh; runs ck.Tanh."""
    return _activation("F.tanh", _TANH, x)


def gelu(x, approximate="none"):
    """x * Phi(x), as F.gelu: exact with the error function (vectorised, Cody's rational approximations), or
    approximate="tanh"; runs ck.GELU."""
    if approximate not in _GELU:
        raise ValueError(f"F.gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _activation("F.gelu", _GELU[approximate], x)


def _softmax(op, x, dim, log):
    x = lift(x, op, "input")
    _float_input(op, "input", x)
    if dim is None:
        raise TypeError(f"{op}: dim is required (the axis to normalise over, e.g. dim=1 for (N, C) scores)")
    dim = _dim(op, "dim", dim, x.data.ndim)
    return _layer((_LogSoftmax if log else _Softmax)(dim, name=op), x)


def softmax(x, dim=None):
    """exp(x) / sum(exp(x)) along dim, as F.softmax (stable: the maximum is subtracted first); runs ck.Softmax."""
    return _softmax("F.softmax", x, dim, False)


def log_softmax(x, dim=None):
    """log(softmax(x)) along dim, formed directly, as F.log_softmax; runs ck.LogSoftmax."""
    return _softmax("F.log_softmax", x, dim, True)


# ---------------------------------------------------------------- pooling, dropout, shapes
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,  # noqa: A002
                recompute_scale_factor=None, antialias=False):
    """As F.interpolate on (N, C, H, W), modes "nearest" and "bilinear"; runs ck.Upsample, so ``size`` or a
    whole-number ``scale_factor`` (for which recompute_scale_factor changes nothing), and antialias=False."""
    op = "F.interpolate"
    if recompute_scale_factor is not None:
        check_flag(op, "recompute_scale_factor", recompute_scale_factor)
    if check_flag(op, "antialias", antialias):
        raise ValueError(f"{op}: antialias=True is not supported")
    return _layer(_Upsample(size, scale_factor, mode, align_corners, name=op), input)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):  # noqa: A002
    """torch's older name of F.interpolate."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """As F.max_pool2d; with return_indices=True, (output, indices): torch's int64 flat h * W + w indices
    per (n, c) plane, an array (they get no gradient)."""
    layer = _MaxPool2d(kernel_size, stride, padding, dilation, check_flag("F.max_pool2d", "return_indices",
                                                                          return_indices), ceil_mode,
                       name="F.max_pool2d")
    return layer(lift(x, "F.max_pool2d", "input"))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    if ceil_mode:
        raise ValueError("F.avg_pool2d: ceil_mode=True is not supported (cnnkit's AvgPool2d floors the output size)")
    if divisor_override is not None:
        raise ValueError("F.avg_pool2d: divisor_override is not supported")
    return _layer(_AvgPool2d(kernel_size, stride, padding, count_include_pad, name="F.avg_pool2d"), x)


def adaptive_avg_pool2d(x, output_size):
    return _layer(_AdaptiveAvgPool2d(output_size, name="F.adaptive_avg_pool2d"), x)


def dropout(x, p=0.5, training=True, inplace=False):
    """Inverted dropout, as F.dropout: p is the probability of dropping; identity when training is False."""
    op = "F.dropout"
    training, _ = check_flag(op, "training", training), check_flag(op, "inplace", inplace)
    layer = _Dropout(p, name=op)
    if not training or layer.p == 0.0:
        return lift(x, op, "input")
    layer.seed, layer.offset = _stream["seed"], _stream["offset"]
    out = _layer(layer, x)
    _stream["offset"] += 1
    return out


def _reshape_bwd(shape, g, needs):
    return (_contig(g).reshape(shape),)


@_profiler.traced("F.reshape.forward", "forward")
def reshape(x, shape):
    x = lift(x, "F.reshape", "input")
    shape = tuple(int(s) for s in shape)
    y = _contig(x.data).reshape(shape)
    return record(_reshape_bwd, [x], y, x.data.shape, "F.reshape")


@_profiler.traced("F.flatten.forward", "forward")
def flatten(x, start_dim=0, end_dim=-1):
    """Dimensions start_dim..end_dim merged into one, as torch.flatten (F.flatten(x, 1) keeps the batch)."""
    op = "F.flatten"
    x = lift(x, op, "input")
    nd = max(x.data.ndim, 1)
    s, e = _dim(op, "start_dim", start_dim, nd), _dim(op, "end_dim", end_dim, nd)
    if s > e:
        raise ValueError(f"F.flatten: start_dim ({start_dim}) must not come after end_dim ({end_dim})")
    shp = x.data.shape
    merged = 1
    for d in shp[s:e + 1]:
        merged *= int(d)
    y = _contig(x.data).reshape(shp[:s] + (merged,) + shp[e + 1:])
    return record(_reshape_bwd, [x], y, shp, op)


def _cat_bwd(saved, g, needs):
    sizes, dim = saved
    out, start = [], 0
    xp = array_module(g)
    for n, w in zip(sizes, needs):
        sl = [slice(None)] * g.ndim
        sl[dim] = slice(start, start + n)
        out.append(xp.ascontiguousarray(g[tuple(sl)]) if w else None)
        start += n
    return out


@_profiler.traced("F.cat.forward", "forward")
def cat(tensors, dim=0):
    """Concatenation along dim, as torch.cat."""
    op = "F.cat"
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError(f"{op}: tensors must be a non-empty list or tuple, got {type(tensors).__name__}")
    ts = [lift(t, op, f"tensors[{i}]") for i, t in enumerate(tensors)]
    ref = ts[0].data
    dim = _dim(op, "dim", dim, ref.ndim)
    for i, t in enumerate(ts[1:], 1):
        _same(op, "tensors[0]", ref, f"tensors[{i}]", t.data)
        a = t.data
        if a.ndim != ref.ndim or a.shape[:dim] + a.shape[dim + 1:] != ref.shape[:dim] + ref.shape[dim + 1:]:
            raise ValueError(f"{op}: every tensor must match tensors[0] {tuple(ref.shape)} except along dim {dim}, "
                             f"got tensors[{i}] of shape {tuple(a.shape)}")
    y = array_module(ref).concatenate([t.data for t in ts], axis=dim)
    return record(_cat_bwd, ts, y, ([t.data.shape[dim] for t in ts], dim), op)


# ---------------------------------------------------------------- arithmetic
def _unbroadcast(g, shape):
    if tuple(g.shape) == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _operands(op, a, b):
    """Two operands as Tensors, or one Tensor and a number; dtype and device checked."""
    if _number(a) and _number(b):
        raise TypeError(f"{op}: at least one operand must be a ck.Tensor, a Parameter or an array")
    ta = None if _number(a) else lift(a, op, "input")
    tb = None if _number(b) else lift(b, op, "other")
    if ta is not None and tb is not None:
        _same(op, "input", ta.data, "other", tb.data)
        try:
            np.broadcast_shapes(ta.data.shape, tb.data.shape)
        except ValueError:
            raise ValueError(f"{op}: shapes {tuple(ta.data.shape)} and {tuple(tb.data.shape)} do not "
                             f"broadcast") from None
    for t, nm in ((ta, "input"), (tb, "other")):
        if t is not None:
            _float_input(op, nm, t)
    return ta, tb


def _add_bwd(shapes, g, needs):
    return [_unbroadcast(g, s) if w else None for s, w in zip(shapes, needs)]


@_profiler.traced("F.add.forward", "forward")
def add(a, b):
    """a + b, as torch.add: two values of one dtype (numpy broadcasting) or a value and a number."""
    op = "F.add"
    ta, tb = _operands(op, a, b)
    if ta is None or tb is None:
        t, c = (tb, a) if ta is None else (ta, b)
        return record(_add_bwd, [t], t.data + t.data.dtype.type(c), [t.data.shape], op)
    return record(_add_bwd, [ta, tb], ta.data + tb.data, [ta.data.shape, tb.data.shape], op)


def _mul_bwd(saved, g, needs):
    a, b = saved
    return [_unbroadcast(g * b, a.shape) if needs[0] else None,
            _unbroadcast(g * a, b.shape) if len(needs) > 1 and needs[1] else None]


def _scale_bwd(c, g, needs):
    return (g * c,)


@_profiler.traced("F.mul.forward", "forward")
def mul(a, b):
    """a * b, as torch.mul: two values of one dtype (numpy broadcasting) or a value and a number."""
    op = "F.mul"
    ta, tb = _operands(op, a, b)
    if ta is None or tb is None:
        t, c = (tb, a) if ta is None else (ta, b)
        c = t.data.dtype.type(c)
        return record(_scale_bwd, [t], t.data * c, c, op)
    return record(_mul_bwd, [ta, tb], ta.data * tb.data, (ta.data, tb.data), op)


def _sum_bwd(saved, g, needs):
    shape, scale = saved
    xp = array_module(g)
    return (xp.broadcast_to(g * g.dtype.type(scale), shape).copy(),)


@_profiler.traced("F.sum.forward", "forward")
def sum(x):  # noqa: A001 (torch's name)
    """The sum of every element: a 0-d value."""
    x = lift(x, "F.sum", "input")
    _float_input("F.sum", "input", x)
    return record(_sum_bwd, [x], x.data.sum(), (x.data.shape, 1.0), "F.sum")


@_profiler.traced("F.mean.forward", "forward")
def mean(x):
    """The mean of every element: a 0-d value."""
    x = lift(x, "F.mean", "input")
    _float_input("F.mean", "input", x)
    return record(_sum_bwd, [x], x.data.mean(), (x.data.shape, 1.0 / max(x.data.size, 1)), "F.mean")


# ---------------------------------------------------------------- linear, conv2d
def _linear_bwd(saved, g, needs):
    x2, w, lead, has_b = saved
    g2 = _contig(g).reshape(-1, w.shape[0])
    dx = ops.matmul(g2, w).reshape(lead + (w.shape[1],)) if needs[0] else None
    dw = ops.matmul(g2, x2, trans_a=True) if needs[1] else None
    db = g2.sum(axis=0) if has_b and needs[2] else None
    return [dx, dw, db] if has_b else [dx, dw]


@_profiler.traced("F.linear.forward", "forward")
def linear(x, weight, bias=None):
    """x @ weight.T + bias, as F.linear: weight (out_features, in_features), x (..., in_features)."""
    op = "F.linear"
    tx, tw = lift(x, op, "input"), lift(weight, op, "weight")
    _float_input(op, "input", tx)
    _same(op, "input", tx.data, "weight", tw.data)
    w = tw.data
    if w.ndim != 2:
        raise ValueError(f"{op}: weight must be 2-D (out_features, in_features), got shape {tuple(w.shape)}")
    if tx.data.ndim < 1 or tx.data.shape[-1] != w.shape[1]:
        raise ValueError(f"{op}: input's last dimension must be in_features = {w.shape[1]}, got shape "
                         f"{tuple(tx.data.shape)}")
    ins = [tx, tw]
    lead = tuple(tx.data.shape[:-1])
    x2 = _contig(tx.data).reshape(-1, w.shape[1])
    y = ops.matmul(x2, _contig(w), trans_b=True)
    if bias is not None:
        tb = lift(bias, op, "bias")
        _same(op, "input", tx.data, "bias", tb.data)
        if tuple(tb.data.shape) != (w.shape[0],):
            raise ValueError(f"{op}: bias must have shape ({w.shape[0]},), got {tuple(tb.data.shape)}")
        y += tb.data
        ins.append(tb)
    return record(_linear_bwd, ins, y.reshape(lead + (w.shape[0],)), (x2, _contig(w), lead, bias is not None), op)


def _conv_bwd(saved, g, needs):
    x, w, hp, has_b, x_shape, explicit = saved
    g = _contig(g)
    dx = _fold_grad(ops.conv2d_bwd_data(g, w, x.shape, **hp), x_shape, explicit, "zeros") if needs[0] else None
    dw = ops.conv2d_bwd_weight(g, x, w.shape, **hp) if needs[1] else None
    db = ops.conv2d_bwd_bias(g) if has_b and needs[2] else None
    return [dx, dw, db] if has_b else [dx, dw]


@_profiler.traced("F.conv2d.forward", "forward")
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution, as F.conv2d: weight (K, C/groups, R, S); padding an int, a pair, "valid" or "same"
    (an odd total pads the extra row and column at the bottom and right, explicitly, as torch)."""
    op = "F.conv2d"
    tx, tw = lift(x, op, "input"), lift(weight, op, "weight")
    _float_input(op, "input", tx)
    _same(op, "input", tx.data, "weight", tw.data)
    w = _contig(tw.data)
    if w.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D (K, C/groups, R, S), got shape {tuple(w.shape)}")
    stride, dilation = check_pair(op, "stride", stride, 1), check_pair(op, "dilation", dilation, 1)
    _, padding, explicit = _conv_padding(op, padding, tuple(w.shape[2:]), stride, dilation)
    hp = dict(stride=stride, padding=padding, dilation=dilation, groups=check_int(op, "groups", groups, minimum=1))
    ins = [tx, tw]
    b = None
    if bias is not None:
        tb = lift(bias, op, "bias")
        _same(op, "input", tx.data, "bias", tb.data)
        b = _contig(tb.data)
        ins.append(tb)
    xd = _contig(_pad_input(tx.data, explicit, "zeros")) if tx.data.ndim == 4 else _contig(tx.data)
    y = ops.conv2d_fwd(xd, w, b, **hp)
    return record(_conv_bwd, ins, y, (xd, w, hp, bias is not None, tx.data.shape, explicit), op)


def _conv_t_bwd(saved, g, needs):
    x, w, plan, has_b = saved
    g = _contig(g)
    dx = plan.grad_input(g, w) if needs[0] else None
    dw = plan.grad_weight(g, x, w.shape) if needs[1] else None
    db = ops.conv2d_bwd_bias(g) if has_b and needs[2] else None
    return [dx, dw, db] if has_b else [dx, dw]


@_profiler.traced("F.conv_transpose2d.forward", "forward")
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution, as F.conv_transpose2d: weight (C_in, C_out/groups, R, S); the conv2d
    kernels with the roles swapped (see cnnkit.layers.conv_transpose)."""
    op = "F.conv_transpose2d"
    tx, tw = lift(x, op, "input"), lift(weight, op, "weight")
    _float_input(op, "input", tx)
    _same(op, "input", tx.data, "weight", tw.data)
    w = _contig(tw.data)
    if w.ndim != 4 or tx.data.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C_in, H, W) and weight 4-D (C_in, C_out/groups, R, S), "
                         f"got shapes {tuple(tx.data.shape)} and {tuple(w.shape)}")
    groups = check_int(op, "groups", groups, minimum=1)
    if tx.data.shape[1] != w.shape[0] or w.shape[0] % groups:
        raise ValueError(f"{op}: weight's first dimension must be the input's channels ({tx.data.shape[1]}) and "
                         f"divisible by groups ({groups}), got weight shape {tuple(w.shape)}")
    s, p, opad, d = _ct.transpose_hparams(op, stride, padding, output_padding, dilation)
    plan = _ct._Plan(op, tx.data.shape, w.shape, s, p, opad, d, groups)
    ins, b = [tx, tw], None
    if bias is not None:
        tb = lift(bias, op, "bias")
        _same(op, "input", tx.data, "bias", tb.data)
        if tuple(tb.data.shape) != (plan.y_shape[1],):
            raise ValueError(f"{op}: bias must have shape ({plan.y_shape[1]},), got {tuple(tb.data.shape)}")
        b = _contig(tb.data)
        ins.append(tb)
    xd = _contig(tx.data)
    return record(_conv_t_bwd, ins, plan.forward(xd, w, b), (xd, w, plan, bias is not None), op)


_ag._OPS.update(add=add, mul=mul, sum=sum, mean=mean, flatten=flatten, reshape=reshape)

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax", "max_pool2d", "avg_pool2d",
           "adaptive_avg_pool2d", "dropout", "flatten", "reshape", "cat", "add", "mul", "sum", "mean", "linear",
           "conv2d", "manual_seed"]
__all__ += ["conv_transpose2d", "interpolate", "upsample"]
