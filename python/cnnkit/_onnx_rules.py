"""The ONNX form of each recorded call, for cnnkit.onnx.export: one rule per layer class (``_LAYERS``) and per
cnnkit.functional op (``_FUNCTIONAL``, keyed by the op's backward). A rule gets the graph builder, the layer
(or the recorded node), its input value names, the input shapes and the output shape, emits ONNX nodes and
returns the name of the value it made. Op semantics: the ONNX operator specs (onnx.ai/onnx/operators).
"""
import math

import numpy as np

from . import autograd as _ag
from . import functional as _F
from . import layers as _L
from .layers.normalization import _BatchNorm
from .zoo.layers import ShortcutA

_INT64_MAX = np.iinfo(np.int64).max


class ExportError(ValueError):
    """A model that cannot be written as ONNX: a layer or op with no ONNX form (or not in this mode)."""


def _attrs_pair(v):
    return [int(v[0]), int(v[1])]


_WHY = {"FractionalMaxPool2d": ": its windows are random in eval mode too",
        "LocallyConnected2d": ": ONNX has no unshared-weight convolution"}


# ---------------------------------------------------------------- layers
def _conv(b, x, w, bias, kpad, explicit, mode, stride, dilation, groups, hint, kernel):
    top, bottom, left, right = explicit
    if mode != "zeros":
        onnx_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
        if onnx_mode == "wrap" and b.opset < 19:
            raise ExportError(f"onnx.export: Conv2d {hint!r} padding_mode 'circular' needs opset >= 19 (Pad's "
                              f"'wrap' mode), got opset {b.opset}")
        x = b.emit("Pad", [x, b.ints([0, 0, top, left, 0, 0, bottom, right], f"{hint}.pads")], f"{hint}.pad",
                   mode=onnx_mode)
        pads = [kpad[0], kpad[1], kpad[0], kpad[1]]
    else:
        pads = [kpad[0] + top, kpad[1] + left, kpad[0] + bottom, kpad[1] + right]
    inputs = [x, w] + ([bias] if bias is not None else [])
    y = b.emit("Conv", inputs, hint, kernel_shape=_attrs_pair(kernel), strides=_attrs_pair(stride), pads=pads,
               dilations=_attrs_pair(dilation), group=int(groups))
    return y


def _remember_conv(b, y, w_array, b_array):
    b.convs[y] = (b.nodes[-1], np.asarray(w_array), None if b_array is None else np.asarray(b_array))


def _conv2d(b, layer, ins, shapes, out, hint):
    bias = layer._params.get("bias")
    y = _conv(b, ins[0], b.param(layer.weight), None if bias is None else b.param(bias), layer._kpad,
              layer._explicit, layer.padding_mode, layer.stride, layer.dilation, layer.groups, hint,
              layer.kernel_size)
    _remember_conv(b, y, layer.weight.data, None if bias is None else bias.data)
    return y


def _conv_transpose2d(b, layer, ins, shapes, out, hint):
    bias = layer._params.get("bias")
    inputs = [ins[0], b.param(layer.weight)] + ([b.param(bias)] if bias is not None else [])
    p = layer.padding
    return b.emit("ConvTranspose", inputs, hint, kernel_shape=_attrs_pair(layer.kernel_size),
                  strides=_attrs_pair(layer.stride), pads=[p[0], p[1], p[0], p[1]],
                  dilations=_attrs_pair(layer.dilation), group=layer.groups,
                  output_padding=_attrs_pair(layer.output_padding))


def _matmul_t(b, x, w, bias, rank, hint):
    """x @ w.T + bias: one Gemm for a 2-D x, else MatMul with the transposed weight (then Add)."""
    if rank == 2:
        return b.emit("Gemm", [x, w] + ([bias] if bias is not None else []), hint, transB=1)
    y = b.emit("MatMul", [x, b.emit("Transpose", [w], f"{hint}.wT", perm=[1, 0])], hint)
    return y if bias is None else b.emit("Add", [y, bias], f"{hint}.bias")


def _linear(b, layer, ins, shapes, out, hint):
    if isinstance(layer, _L.DropConnect) and layer.training and layer.p > 0:
        raise ExportError(f"onnx.export: layer {layer.label()} (DropConnect) draws random weights in training "
                          f"mode; it is frozen in training mode")
    bias = layer._params.get("bias")
    return _matmul_t(b, ins[0], b.param(layer.weight), None if bias is None else b.param(bias), len(shapes[0]),
                     hint)


def _simple(op, **attrs):
    def rule(b, layer, ins, shapes, out, hint):
        return b.emit(op, ins, hint, **{k: (v(layer) if callable(v) else v) for k, v in attrs.items()})
    return rule


def _silu(b, layer, ins, shapes, out, hint):
    return b.emit("Mul", [ins[0], b.emit("Sigmoid", ins, f"{hint}.sigmoid")], hint)


def _gelu(b, layer, ins, shapes, out, hint):
    x = ins[0]
    if b.opset >= 20:
        return b.emit("Gelu", [x], hint, approximate=layer.approximate)
    if layer.approximate == "tanh":   # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = b.emit("Mul", [b.emit("Mul", [x, x], f"{hint}.x2"), x], f"{hint}.x3")
        inner = b.emit("Add", [x, b.emit("Mul", [x3, b.scalar(0.044715)], f"{hint}.cx3")], f"{hint}.inner")
        t = b.emit("Tanh", [b.emit("Mul", [inner, b.scalar(math.sqrt(2.0 / math.pi))], f"{hint}.arg")], f"{hint}.t")
    else:                             # 0.5 x (1 + erf(x / sqrt(2)))
        t = b.emit("Erf", [b.emit("Mul", [x, b.scalar(1.0 / math.sqrt(2.0))], f"{hint}.arg")], f"{hint}.erf")
    half = b.emit("Mul", [x, b.scalar(0.5)], f"{hint}.half")
    return b.emit("Mul", [half, b.emit("Add", [t, b.scalar(1.0)], f"{hint}.one_plus")], hint)


def _prelu(b, layer, ins, shapes, out, hint):
    w = np.asarray(layer.weight.data)
    rank = len(shapes[0])
    slope = w.reshape((-1,) + (1,) * (rank - 2)) if layer.num_parameters > 1 else w.reshape(1)
    return b.emit("PRelu", [ins[0], b.const(slope, b.param_name.get(id(layer.weight), "prelu.weight"))], hint)


def _softmax(b, layer, ins, shapes, out, hint):
    op = "LogSoftmax" if isinstance(layer, _L.LogSoftmax) else "Softmax"
    return b.emit(op, ins, hint, axis=layer.dim % len(shapes[0]))


def _passthrough(b, layer, ins, shapes, out, hint):
    if getattr(layer, "training", False) and getattr(layer, "p", 0) > 0 and not isinstance(layer, _L.Identity):
        raise ExportError(f"onnx.export: layer {layer.label()} ({type(layer).__name__}) is random in training mode "
                          f"(a functional F.dropout called with training=True?); export runs eval mode")
    return ins[0]


def _maxpool(b, layer, ins, shapes, out, hint):
    # ceil_mode as torch: a last window that would start in the right padding is dropped, which ONNX's ceil_mode
    # does not do; so floor mode, with the end padding that gives torch's output size (padding reads as -inf)
    p, k, s, d = layer.padding, layer.kernel_size, layer.stride, layer.dilation
    end = [(out[2 + a] - 1) * s[a] + d[a] * (k[a] - 1) + 1 - shapes[0][2 + a] - p[a] for a in range(2)]
    return b.emit("MaxPool", ins, hint, kernel_shape=_attrs_pair(k), strides=_attrs_pair(s),
                  pads=[p[0], p[1], max(end[0], 0), max(end[1], 0)], dilations=_attrs_pair(d))


def _avgpool(b, layer, ins, shapes, out, hint):
    p = layer.padding
    return b.emit("AveragePool", ins, hint, kernel_shape=_attrs_pair(layer.kernel_size),
                  strides=_attrs_pair(layer.stride), pads=[p[0], p[1], p[0], p[1]],
                  count_include_pad=int(layer.count_include_pad))


def _bin_matrix(n_in, n_out, dtype):
    """(n_out, n_in): row i averages torch's adaptive bin floor(i*n_in/n_out) .. ceil((i+1)*n_in/n_out) - 1."""
    a = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a.astype(dtype)


def _adaptive(b, layer, ins, shapes, out, hint):
    H, W = shapes[0][2:]
    P, Q = layer.output_size
    is_max = isinstance(layer, _L.AdaptiveMaxPool2d)
    if (H, W) == (P, Q):
        return ins[0]
    if (P, Q) == (1, 1):
        return b.emit("GlobalMaxPool" if is_max else "GlobalAveragePool", ins, hint)
    if H % P == 0 and W % Q == 0:
        k = [H // P, W // Q]
        return b.emit("MaxPool" if is_max else "AveragePool", ins, hint, kernel_shape=k, strides=k)
    if is_max:
        raise ExportError(f"onnx.export: layer {layer.label()} (AdaptiveMaxPool2d) pools {H}x{W} to {P}x{Q}, whose "
                          f"bins are uneven; ONNX has no such pooling (sizes that divide are exported)")
    # uneven (or overlapping) bins: the mean over a bin is separable, y = Ah x Aw^T with constant matrices
    t = b.emit("MatMul", [ins[0], b.const(_bin_matrix(W, Q, b.dtype).T, f"{hint}.AwT")], f"{hint}.cols")
    return b.emit("MatMul", [b.const(_bin_matrix(H, P, b.dtype), f"{hint}.Ah"), t], hint)


def _batchnorm(b, layer, ins, shapes, out, hint):
    if not layer.track_running_stats:
        raise ExportError(f"onnx.export: layer {layer.label()} ({type(layer).__name__}) has no running statistics "
                          f"(track_running_stats=False), so eval mode normalises with each batch's own")
    C, dt = layer.num_features, b.dtype
    mean = np.asarray(layer._buffers["running_mean"], dtype=dt)
    var = np.asarray(layer._buffers["running_var"], dtype=dt)
    gamma = np.asarray(layer.weight.data) if layer.affine else np.ones(C, dt)
    beta = np.asarray(layer.bias.data) if layer.affine else np.zeros(C, dt)
    conv = b.convs.get(ins[0])
    src = ins[0]
    if b.fold and conv is not None and b.uses_of_value(src) == 1:
        node, w, cb = conv
        alpha = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + layer.eps)
        w2 = (w.astype(np.float64) * alpha[:, None, None, None]).astype(dt)
        b2 = (((cb.astype(np.float64) if cb is not None else 0.0) - mean) * alpha + beta).astype(dt)
        node.input[1] = b.const(w2, f"{hint}.folded_weight")
        if len(node.input) > 2:
            node.input[2] = b.const(b2, f"{hint}.folded_bias")
        else:
            node.input.append(b.const(b2, f"{hint}.folded_bias"))
        return src
    scale = b.param(layer.weight) if layer.affine else b.const(gamma, f"{hint}.scale")
    shift = b.param(layer.bias) if layer.affine else b.const(beta, f"{hint}.shift")
    return b.emit("BatchNormalization", [src, scale, shift, b.const(mean, f"{hint}.running_mean"),
                                         b.const(var, f"{hint}.running_var")], hint, epsilon=layer.eps)


def _lrn(b, layer, ins, shapes, out, hint):
    if layer.size % 2 == 0:
        raise ExportError(f"onnx.export: layer {layer.label()} (LocalResponseNorm) has an even size {layer.size}; "
                          f"ONNX's LRN centres an even window one channel later than torch's")
    return b.emit("LRN", ins, hint, size=layer.size, alpha=layer.alpha, beta=layer.beta, bias=layer.k)


def _affine(b, layer, y, rank, hint):
    """y * weight[c] + bias[c] over dimension 1 (GroupNorm, InstanceNorm2d's per-channel parameters)."""
    shp = (-1,) + (1,) * (rank - 2)
    w, bias = layer._params.get("weight"), layer._params.get("bias")
    if w is not None:
        y = b.emit("Mul", [y, b.const(np.asarray(w.data).reshape(shp), b.param_name.get(id(w), "weight"))],
                   f"{hint}.scaled")
    if bias is not None:
        y = b.emit("Add", [y, b.const(np.asarray(bias.data).reshape(shp), b.param_name.get(id(bias), "bias"))],
                   f"{hint}.shifted")
    return y


def _layernorm(b, layer, ins, shapes, out, hint):
    k = len(layer.normalized_shape)
    w, bias = layer._params.get("weight"), layer._params.get("bias")
    scale = b.param(w) if w is not None else b.const(np.ones(layer.normalized_shape, b.dtype), f"{hint}.scale")
    inputs = [ins[0], scale] + ([b.param(bias)] if bias is not None else [])
    return b.emit("LayerNormalization", inputs, hint, axis=-k, epsilon=layer.eps)


def _groupnorm(b, layer, ins, shapes, out, hint):
    # GroupNormalization (opset 18) scaled per group until opset 21; as (N, G, -1) rows, InstanceNormalization
    # normalises each group, then the per-channel affine map
    G, rank = layer.num_groups, len(shapes[0])
    rows = b.emit("Reshape", [ins[0], b.ints([0, G, -1], f"{hint}.rows")], f"{hint}.rows")
    ones, zeros = b.const(np.ones(G, b.dtype), f"{hint}.ones"), b.const(np.zeros(G, b.dtype), f"{hint}.zeros")
    norm = b.emit("InstanceNormalization", [rows, ones, zeros], f"{hint}.norm", epsilon=layer.eps)
    y = b.emit("Reshape", [norm, b.emit("Shape", [ins[0]], f"{hint}.shape")], f"{hint}.xhat")
    return _affine(b, layer, y, rank, hint)


def _instancenorm(b, layer, ins, shapes, out, hint):
    C = layer.num_features
    w, bias = layer._params.get("weight"), layer._params.get("bias")
    scale = b.param(w) if w is not None else b.const(np.ones(C, b.dtype), f"{hint}.scale")
    shift = b.param(bias) if bias is not None else b.const(np.zeros(C, b.dtype), f"{hint}.shift")
    return b.emit("InstanceNormalization", [ins[0], scale, shift], hint, epsilon=layer.eps)


def _flatten(b, layer, ins, shapes, out, hint):
    return b.reshape(ins[0], shapes[0], out, hint)


def _add(b, layer, ins, shapes, out, hint):
    return b.emit("Add" if len(ins) == 2 else "Sum", ins, hint)


def _concat(b, layer, ins, shapes, out, hint):
    return b.emit("Concat", ins, hint, axis=layer.axis % len(shapes[0]))


def _upsample(b, layer, ins, shapes, out, hint):
    # torch's nearest reads row floor(i * in / out) ("asymmetric", "floor"); bilinear is "pytorch_half_pixel",
    # or "align_corners"
    if layer.mode == "nearest":
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        attrs = dict(mode="linear", coordinate_transformation_mode="align_corners" if layer.align_corners
                     else "pytorch_half_pixel")
    if layer.scale_factor is not None:
        scales = b.const(np.asarray([1, 1] + list(layer.scale_factor), np.float32), f"{hint}.scales")
        return b.emit("Resize", [ins[0], "", scales], hint, **attrs)
    nc = b.emit("Slice", [b.emit("Shape", [ins[0]], f"{hint}.shape"), b.ints([0], f"{hint}.zero"),
                          b.ints([2], f"{hint}.two")], f"{hint}.nc")
    sizes = b.emit("Concat", [nc, b.ints(list(out[2:]), f"{hint}.hw")], f"{hint}.sizes", axis=0)
    return b.emit("Resize", [ins[0], "", "", sizes], hint, **attrs)


def _zeropad(b, layer, ins, shapes, out, hint):
    left, right, top, bottom = layer.padding
    lead = [0] * (len(shapes[0]) - 2)
    return b.emit("Pad", [ins[0], b.ints(lead + [top, left] + lead + [bottom, right], f"{hint}.pads")], hint)


def _shortcut_a(b, layer, ins, shapes, out, hint):
    s, p = layer.stride, layer.pad
    sub = b.emit("Slice", [ins[0], b.ints([0, 0], f"{hint}.starts"), b.ints([_INT64_MAX] * 2, f"{hint}.ends"),
                           b.ints([2, 3], f"{hint}.axes"), b.ints([s, s], f"{hint}.steps")], f"{hint}.sub")
    return b.emit("Pad", [sub, b.ints([0, p, 0, 0, 0, p, 0, 0], f"{hint}.pads")], hint)


_LAYERS = {
    _L.Conv2d: _conv2d, _L.ConvTranspose2d: _conv_transpose2d, _L.Linear: _linear,
    _L.ReLU: _simple("Relu"), _L.LeakyReLU: _simple("LeakyRelu", alpha=lambda l: l.negative_slope),
    _L.ELU: _simple("Elu", alpha=lambda l: l.alpha), _L.Sigmoid: _simple("Sigmoid"), _L.Tanh: _simple("Tanh"),
    _L.SiLU: _silu, _L.GELU: _gelu, _L.PReLU: _prelu, _L.Softmax: _softmax, _L.Identity: _passthrough,
    _L.Dropout: _passthrough, _L.Dropout2d: _passthrough, _L.StochasticDepth: _passthrough,
    _L.DropConnect: _linear,
    _L.MaxPool2d: _maxpool, _L.AvgPool2d: _avgpool, _L.GlobalAvgPool2d: _simple("GlobalAveragePool"),
    _L.AdaptiveAvgPool2d: _adaptive, _L.AdaptiveMaxPool2d: _adaptive,
    _BatchNorm: _batchnorm, _L.LocalResponseNorm: _lrn, _L.LayerNorm: _layernorm, _L.GroupNorm: _groupnorm,
    _L.InstanceNorm2d: _instancenorm, _L.Flatten: _flatten, _L.Add: _add, _L.Concat: _concat,
    _L.Upsample: _upsample, _L.ZeroPad2d: _zeropad, ShortcutA: _shortcut_a,
}


# ---------------------------------------------------------------- cnnkit.functional ops
def _f_reshape(b, nd, ins, shapes, out, hint):
    return b.reshape(ins[0], shapes[0], out, hint)


def _f_cat(b, nd, ins, shapes, out, hint):
    return b.emit("Concat", ins, hint, axis=int(nd.saved[1]))


def _f_add(b, nd, ins, shapes, out, hint):
    if len(ins) != 2:
        raise ExportError("onnx.export: op F.add of a value and a Python number has no ONNX export (the number is "
                          "not kept in the record); add a constant array instead (x + np.full((), c, np.float32))")
    return b.emit("Add", ins, hint)


def _f_mul(b, nd, ins, shapes, out, hint):
    return b.emit("Mul", ins, hint)


def _f_scale(b, nd, ins, shapes, out, hint):
    return b.emit("Mul", [ins[0], b.scalar(nd.saved)], hint)


def _f_reduce(b, nd, ins, shapes, out, hint):
    return b.emit("ReduceMean" if nd.name == "F.mean" else "ReduceSum", ins, hint, keepdims=0)


def _f_linear(b, nd, ins, shapes, out, hint):
    return _matmul_t(b, ins[0], ins[1], ins[2] if len(ins) > 2 else None, len(shapes[0]), hint)


def _f_conv2d(b, nd, ins, shapes, out, hint):
    _, w, hp, has_b, _, explicit = nd.saved
    y = _conv(b, ins[0], ins[1], ins[2] if has_b else None, hp["padding"], explicit, "zeros", hp["stride"],
              hp["dilation"], hp["groups"], hint, w.shape[2:])
    if all(type(s) is not _ag._Node for s in nd.inputs[1:]):
        _remember_conv(b, y, w, nd.inputs[2].data if has_b else None)
    return y


def _f_conv_transpose2d(b, nd, ins, shapes, out, hint):
    _, w, plan, _ = nd.saved
    hp, (H, W), (R, S) = plan.hp, plan.hw, w.shape[2:]
    s, p, d = hp["stride"], hp["padding"], hp["dilation"]
    base = [(n - 1) * s[a] - 2 * p[a] + d[a] * (k - 1) + 1 for a, (n, k) in enumerate(((H, R), (W, S)))]
    opad = [plan.y_shape[2] - base[0], plan.y_shape[3] - base[1]]
    return b.emit("ConvTranspose", ins, hint, kernel_shape=[R, S], strides=_attrs_pair(s),
                  pads=[p[0], p[1], p[0], p[1]], dilations=_attrs_pair(d), group=hp["groups"], output_padding=opad)


_FUNCTIONAL = {
    _F._reshape_bwd: _f_reshape, _F._cat_bwd: _f_cat, _F._add_bwd: _f_add, _F._mul_bwd: _f_mul,
    _F._scale_bwd: _f_scale, _F._sum_bwd: _f_reduce, _F._linear_bwd: _f_linear, _F._conv_bwd: _f_conv2d,
    _F._conv_t_bwd: _f_conv_transpose2d,
}

__all__ = ["ExportError"]
