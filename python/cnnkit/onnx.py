"""ck.onnx.export: a Sequential, a Graph, a ck.Module or a single layer written as an ONNX file (opset 17+),
for onnxruntime, TensorRT or any other ONNX consumer. Reference: the ONNX operator specs (onnx.ai/onnx/operators).

The graph comes from the record of one eval-mode forward on zeros of ``input_shape`` (cnnkit.autograd), so a
Module's Python control flow is frozen at that input, as torch.onnx's tracing exporter freezes it. Every
recorded layer call and cnnkit.functional op maps to ONNX ops here; anything else raises ExportError naming
the layer and its type. ``onnx`` itself is imported only inside export: the core does not need it.
"""
import numbers
import os

import numpy as np

from . import autograd as _ag
from ._io import atomic_write
from ._onnx_rules import _FUNCTIONAL, _LAYERS, _WHY, ExportError
from .layer import Layer

MIN_OPSET, MAX_OPSET = 17, 21   # LayerNormalization needs 17; 21 is the newest opset these mappings were checked at


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
    state = _ag._state.__dict__
    no_grad, kept = state.get("no_grad", False), state.get("kept")
    try:
        model.eval()
        state["no_grad"] = False            # the export needs the record, even inside ck.no_grad()
        # Tensor._make keeps every recorded value alive in `kept` (id(node) -> Tensor): a recording holds only
        # what backward reads, and no node holds a reshape's output shape
        state["kept"] = {}
        out = model(x)
        proto = _Builder(onnx, model, x, state["kept"], opset, dtype, dynamic_batch, fold_batchnorm).build(out)
    finally:
        state["no_grad"], state["kept"] = no_grad, kept
        for layer, mode in modes:
            layer.training = mode
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, proto.SerializeToString())
    return proto


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

__all__ = ["export", "ExportError"]
