"""ck.onnx.export: a Sequential, a Graph, a ck.Module or a single layer written as an ONNX file (opset 17+),
for onnxruntime, TensorRT or any other ONNX consumer. Reference: the ONNX operator specs (onnx.ai/onnx/operators).

The graph comes from the record of one eval-mode forward on zeros of ``input_shape`` (cnnkit.autograd), so a
Module's Python control flow is frozen at that input, as torch.onnx's tracing exporter freezes it. Every
recorded layer call and cnnkit.functional op maps to ONNX ops here; anything else raises ExportError naming
the layer and its type. ``onnx`` itself is imported only inside export: the core does not need it.
"""
import math
import numbers
import os

import numpy as np

from . import autograd as _ag
from . import functional as _F
from . import layers as _L
from ._io import atomic_write
from .layer import Layer
from .layers.normalization import _BatchNorm
from .zoo.layers import ShortcutA

MIN_OPSET, MAX_OPSET = 17, 21   # LayerNormalization needs 17; 21 is the newest opset these mappings were checked at
_INT64_MAX = np.iinfo(np.int64).max


class ExportError(ValueError):
    """A model that cannot be written as ONNX: a layer or op with no ONNX form (or not in this mode)."""


def _check_args(model, path, input_shape, opset):
    if not isinstance(model, Layer):
        raise TypeError(f"onnx.export: model must be a ck.Sequential, ck.Graph, ck.Module or layer, got "
                        f"{type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"onnx.export: path must be a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(input_shape, (tuple, list)) or not input_shape or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in input_shape):
        raise ValueError(f"onnx.export: input_shape must be a non-empty tuple of positive ints including the batch "
                         f"dimension, e.g. (1, 3, 32, 32), got {input_shape!r}")
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"onnx.export: opset must be an int, got {type(opset).__name__}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"onnx.export: opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    return tuple(int(d) for d in input_shape), int(opset)


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError('ck.onnx.export needs the onnx package: pip install "cnnkit[onnx]"') from None
    return onnx


def export(model, path, input_shape=(1, 3, 32, 32), opset=17, dynamic_batch=True, fold_batchnorm=False):
    """Write `model` to `path` as an ONNX model (atomically) and return the onnx.ModelProto.

    input_shape: the input's shape with the batch dimension; the forward is traced once on zeros of it, in eval
    mode (Dropout is the identity, BatchNorm uses its running statistics). dynamic_batch: the first dimension
    of the input and output is the symbolic "batch", so any batch size runs. fold_batchnorm: a BatchNorm read
    only from a convolution is folded into its weight and bias (one Conv instead of Conv + BatchNormalization;
    the rounding changes within float32). The input is named "input", the output "output" ("output0", ...
    for several); initializers carry the parameter names (``layer1.0.conv1.weight``). The file passes
    onnx.checker.check_model. A layer or op with no ONNX form raises ExportError naming it and its type."""
    input_shape, opset = _check_args(model, path, input_shape, opset)
    onnx = _import_onnx()
    params = [p for p in model.parameters()]
    dtype = params[0].dtype if params else np.dtype(np.float32)
    if any(p.dtype != dtype for p in params) or dtype not in (np.float32, np.float64):
        raise ExportError(f"onnx.export: every parameter must have one float dtype, got "
                          f"{sorted({str(p.dtype) for p in params})}")
    if params and not isinstance(params[0].data, np.ndarray):
        raise ExportError("onnx.export: the model is on a GPU; export it from the CPU (model.cpu())")
    x = _ag.Tensor(np.zeros(input_shape, dtype=dtype))
    modes = [(layer, layer.training) for _, layer in model.named_layers()]
    no_grad = _ag._state.__dict__.get("no_grad", False)
    try:
        model.eval()
        _ag._state.no_grad = False          # the export needs the record, even inside ck.no_grad()
        with _ag.keep_values() as kv:
            out = model(x)
            proto = _Builder(onnx, model, x, kv.kept, opset, dtype, dynamic_batch, fold_batchnorm).build(out)
    finally:
        _ag._state.no_grad = no_grad
        for layer, mode in modes:
            layer.training = mode
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, proto.SerializeToString())
    return proto


def _attrs_pair(v):
    return [int(v[0]), int(v[1])]


class _Builder:
    """The ONNX graph of one recorded forward: nodes in topological order, values named after the layer paths,
    initializers after the parameter names."""

    def __init__(self, onnx, model, x, kept, opset, dtype, dynamic, fold):
        self.onnx, self.h = onnx, onnx.helper
        self.x, self.kept, self.opset, self.dtype = x, kept, opset, np.dtype(dtype)
        self.dynamic, self.fold = dynamic, fold
        self.nodes, self.inits, self.used = [], {}, {"input"}
        self.value = {}            # id(recorded node) -> ONNX value name
        self.param_name = {id(p): n for n, p in model.named_parameters()}
        self.layer_path = {id(l): p for p, l in model.named_layers()}
        self.param_value = {}      # id(Parameter) -> initializer name
        self.convs = {}            # conv output value -> (NodeProto, weight array, bias array or None)
        self.uses = {}

    # ------------------------------------------------------------ names, constants, nodes
    def fresh(self, hint):
        base = "".join(c if c.isalnum() or c in "._" else "_" for c in hint) or "v"
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def const(self, array, hint):
        name = self.fresh(hint)
        self.inits[name] = np.ascontiguousarray(array)
        return name

    def scalar(self, v, hint="c"):
        return self.const(np.asarray(v, dtype=self.dtype), hint)

    def ints(self, v, hint="shape"):
        return self.const(np.asarray(v, dtype=np.int64), hint)

    def param(self, p, hint=None):
        if id(p) not in self.param_value:
            self.param_value[id(p)] = self.const(np.asarray(p.data), self.param_name.get(id(p), hint or "param"))
        return self.param_value[id(p)]

    def emit(self, op, inputs, hint, n_out=1, **attrs):
        outs = [self.fresh(hint if n_out == 1 else f"{hint}.{i}") for i in range(n_out)]
        self.nodes.append(self.h.make_node(op, list(inputs), outs, name=self.fresh(f"{op}:{hint}"), **attrs))
        return outs[0] if n_out == 1 else outs

    def reshape(self, x, in_shape, out_shape, hint):
        """Reshape to out_shape; with a dynamic batch the first dimension is kept (0) or inferred (-1)."""
        target = list(out_shape)
        if self.dynamic and target and in_shape:
            target[0] = 0 if out_shape[0] == in_shape[0] else -1
        return self.emit("Reshape", [x, self.ints(target, f"{hint}.shape")], hint)

    # ------------------------------------------------------------ the walk
    def build(self, out):
        h = self.h
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if not outs or not all(isinstance(t, _ag.Tensor) for t in outs):
            raise ExportError(f"onnx.export: the model must return a ck.Tensor or a tuple of them, got "
                              f"{type(out).__name__}")
        order = _ag._order(outs)
        for nd in order:
            for s in nd.inputs:
                if type(s) is _ag._Node:
                    self.uses[id(s)] = self.uses.get(id(s), 0) + 1
        for t in outs:
            if t._node is not None:
                self.uses[id(t._node)] = self.uses.get(id(t._node), 0) + 1
        for nd in order:
            self.value[id(nd)] = self.node(nd)
        names = [self.source(t._node if t._node is not None else t) for t in outs]
        elem = h.np_dtype_to_tensor_dtype(self.dtype)
        batch = "batch" if self.dynamic else None
        out_names = ["output"] if len(outs) == 1 else [f"output{i}" for i in range(len(outs))]
        produced = {o for n in self.nodes for o in n.output}
        for i, (v, want) in enumerate(zip(names, out_names)):
            if v in produced and names.count(v) == 1:
                self._rename(v, want)
            else:
                self.nodes.append(h.make_node("Identity", [v], [want], name=self.fresh(f"Identity:{want}")))
        graph_out = []
        for t, want in zip(outs, out_names):
            shp = list(t.data.shape)
            if shp and batch:
                shp[0] = batch
            graph_out.append(h.make_tensor_value_info(want, elem, shp))
        in_shape = list(self.x.data.shape)
        if batch:
            in_shape[0] = batch
        needed = {i for n in self.nodes for i in n.input}
        inits = [self.onnx.numpy_helper.from_array(a, name) for name, a in self.inits.items() if name in needed]
        graph = h.make_graph(self.nodes, "cnnkit", [h.make_tensor_value_info("input", elem, in_shape)], graph_out,
                             initializer=inits)
        opsets = [h.make_opsetid("", self.opset)]
        model = h.make_model(graph, opset_imports=opsets, producer_name="cnnkit",
                             ir_version=h.find_min_ir_version_for(opsets))
        return model

    def _rename(self, old, new):
        for n in self.nodes:
            for seq in (n.input, n.output):
                for i, v in enumerate(seq):
                    if v == old:
                        seq[i] = new
        for k, v in list(self.convs.items()):
            if k == old:
                self.convs[new] = self.convs.pop(k)

    def source(self, s):
        """The ONNX value of a node input: a recorded node's output, the model input, a parameter or a constant."""
        if type(s) is _ag._Node:
            return self.value[id(s)]
        if s is self.x:
            return "input"
        if s._param is not None:
            return self.param(s._param)
        return self.const(np.asarray(s.data), "const")

    def uses_of_value(self, value):
        """How many recorded calls (and model outputs) read the output of the node that made `value`."""
        return sum(self.uses.get(k, 0) for k, v in self.value.items() if v == value)

    def shape_of(self, s):
        if type(s) is _ag._Node:
            return tuple(self.kept[id(s)].data.shape)
        return tuple(s.data.shape)

    def node(self, nd):
        ins = [self.source(s) for s in nd.inputs]
        in_shapes = [self.shape_of(s) for s in nd.inputs]
        out_shape = tuple(self.kept[id(nd)].data.shape)
        if nd.fn is _ag._layer_backward:
            layer = nd.saved[0]
            hint = self.layer_path.get(id(layer)) or layer.name or type(layer).__name__.lower()
            mro = type(layer).__mro__
            owner = next(i for i, c in enumerate(mro) if "forward" in c.__dict__)
            for i, cls in enumerate(mro):
                rule = _LAYERS.get(cls)
                if rule is not None:
                    if owner < i:
                        break      # a subclass with its own forward: not the op the rule writes
                    return rule(self, layer, ins, in_shapes, out_shape, hint)
            raise ExportError(f"onnx.export: layer {layer.label()} ({type(layer).__name__}) has no ONNX export"
                              + _WHY.get(type(layer).__name__, ""))
        rule = _FUNCTIONAL.get(nd.fn)
        if rule is None:
            raise ExportError(f"onnx.export: op {nd.name} has no ONNX export")
        return rule(self, nd, ins, in_shapes, out_shape, nd.name.replace("F.", ""))


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
    p = layer.padding
    return b.emit("MaxPool", ins, hint, kernel_shape=_attrs_pair(layer.kernel_size), strides=_attrs_pair(layer.stride),
                  pads=[p[0], p[1], p[0], p[1]], dilations=_attrs_pair(layer.dilation), ceil_mode=int(layer.ceil_mode))


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

__all__ = ["export", "ExportError"]
