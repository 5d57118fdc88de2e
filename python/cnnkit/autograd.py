"""Recording a forward pass and running it backward: ck.Tensor, the values that flow through a ck.Module's
forward, and the engine that replays the recorded backward routines in reverse.

A call is recorded define-by-run: every layer call and every cnnkit.functional op made on a Tensor (or
inside a Module call) makes one node holding what that call's backward needs (a layer's ``_cache``, moved
out of the layer so the same layer can be called again) and the Tensors it read. A Tensor points at the
node that made it, a node at its inputs, never the other way, so a recording is freed as soon as nothing
holds its output, with no cycle for the garbage collector. ``loss.backward()`` orders the nodes reachable
from the loss, hands each its output gradient (the sum over every use of the value), runs its backward and
then releases it: caches and input references are dropped, so a second backward of the same forward is an
error, not a silent doubled gradient.

A Tensor is a wrapper, not an array: numpy functions and ufuncs applied to one raise TypeError naming the
function, since cnnkit could not differentiate them. ``.data`` is the array, to leave the recording.
"""
import threading

import numpy as np

from . import profiler as _profiler
from ._xp import array_module, is_device_array
from .parameter import Parameter, grads_ready

_state = threading.local()
_OPS = {}   # add, mul, sum, mean, flatten, reshape: filled by cnnkit.functional, which Tensor's operators call


def _depth():
    return getattr(_state, "depth", 0)


def is_recording():
    """True inside a Module call: layer calls on plain arrays are recorded too."""
    return getattr(_state, "depth", 0) > 0


def grad_enabled():
    return not getattr(_state, "no_grad", False)


class no_grad:
    """Context manager (as torch.no_grad): calls inside it run forward only; nothing is kept for backward.
    The outputs are Tensors that backward passes through as constants."""

    def __enter__(self):
        self._prev = getattr(_state, "no_grad", False)
        _state.no_grad = True
        return self

    def __exit__(self, *exc):
        _state.no_grad = self._prev
        return False


class _Recording:
    """The outermost Module call in progress: depth counter, and what a failed forward must put back
    (buffers such as BatchNorm's running statistics, the random streams' offsets), saved on first use."""

    def __enter__(self):
        self.outer = _depth() == 0
        _state.depth = _depth() + 1
        if self.outer:
            _state.undo = {}
        return self

    def __exit__(self, exc_type, exc, tb):
        _state.depth = _depth() - 1
        if self.outer:
            undo, _state.undo = _state.undo, None
            if exc_type is not None:
                for layer, bufs, offset in undo.values():
                    for k, v in bufs.items():
                        layer._buffers[k][...] = v
                    layer.offset = offset
        return False


def _save_undo(layer):
    undo = getattr(_state, "undo", None)
    if undo is None or id(layer) in undo:
        return
    if layer._buffers or layer.stochastic:
        bufs = {k: v.copy() for k, v in layer._buffers.items()} if layer.training else {}
        undo[id(layer)] = (layer, bufs, layer.offset)


def _describe(v):
    return type(v).__name__ if not hasattr(v, "dtype") else f"{type(v).__name__} of dtype {v.dtype}"


def _not_differentiable(what):
    return TypeError(f"{what} on a ck.Tensor: cnnkit cannot differentiate it, so its gradient would be wrong. "
                     f"Use a layer or a cnnkit.functional op (F.relu, F.tanh, F.softmax, F.add, ...), or take "
                     f"tensor.data to compute on the array as a constant (outside the recording)")


class _Node:
    """One recorded call: ``fn(saved, g, needs) -> gradients of the inputs`` (None where not needed).

    ``inputs`` holds, per input, the node that made it, or the Tensor itself for a leaf (a Parameter, a
    constant, a requires_grad leaf). Never an intermediate Tensor: that would keep its array alive until
    backward although only ``saved`` is read there (BatchNorm's output under a ReLU, a residual sum), so
    a recorded forward would hold one more activation per such value than a Sequential does."""

    __slots__ = ("fn", "inputs", "saved", "name", "own", "released")

    def __init__(self, fn, inputs, saved, name, own=()):
        self.fn, self.saved, self.name, self.own = fn, saved, name, own
        self.inputs = tuple(t._node if t._node is not None else t for t in inputs)
        self.released = False


class Tensor:
    """A value recorded for backward: ``.data`` (a numpy or CuPy array), ``.shape``, ``.dtype``; ``+``, ``-``
    and ``*`` with a number or another value (broadcasting as numpy, reduced back in backward), ``/`` by a
    number; ``.item()`` and ``.backward()`` for a loss.

    ``ck.Tensor(array, requires_grad=True)`` makes a leaf whose ``.grad`` backward fills (accumulating, as
    torch). Values made by layers and cnnkit.functional ops carry the record of how they were made."""

    __slots__ = ("data", "_node", "_param", "requires_grad", "grad", "__weakref__")
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        if not (isinstance(data, np.ndarray) or is_device_array(data)):
            data = np.asarray(data)
        self.data = data
        self._node = None
        self._param = None
        self.requires_grad = bool(requires_grad)
        self.grad = None

    @classmethod
    def _make(cls, data, node):
        t = cls.__new__(cls)
        t.data, t._node, t._param, t.requires_grad, t.grad = data, node, None, False, None
        if node is not None and _state.__dict__.get("kept") is not None:   # cnnkit.onnx's trace: keep the values
            _state.kept[id(node)] = t
        return t

    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(self.data.size))
    device = property(lambda self: f"cuda:{self.data.device.id}" if is_device_array(self.data) else "cpu")

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        how = f", made by {self._node.name}" if self._node is not None else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{how})"

    def numel(self):
        return self.size

    def dim(self):
        return self.ndim

    def item(self):
        """The value of a one-element Tensor as a Python float (a host read on a GPU)."""
        if self.data.size != 1:
            raise ValueError(f"Tensor.item: only a one-element Tensor has an item, got shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self):
        """The array on the host (a copy for a GPU array; the array itself on the CPU)."""
        return self.data.get() if is_device_array(self.data) else self.data

    def detach(self):
        """The same array as a Tensor with no record: backward treats it as a constant."""
        return Tensor(self.data)

    # ---------------------------------------------------------------- arithmetic (recorded)
    def __add__(self, other):
        return _OPS["add"](self, other)

    def __radd__(self, other):
        return _OPS["add"](other, self)

    def __sub__(self, other):
        return _OPS["add"](self, _neg(other))

    def __rsub__(self, other):
        return _OPS["add"](other, _neg(self))

    def __mul__(self, other):
        return _OPS["mul"](self, other)

    def __rmul__(self, other):
        return _OPS["mul"](other, self)

    def __neg__(self):
        return _OPS["mul"](self, -1.0)

    def __truediv__(self, other):
        if isinstance(other, (int, float, np.integer, np.floating)) and not isinstance(other, bool):
            return _OPS["mul"](self, 1.0 / float(other))
        raise _not_differentiable(f"dividing by a {type(other).__name__}")

    def sum(self):
        return _OPS["sum"](self)

    def mean(self):
        return _OPS["mean"](self)

    def flatten(self, start_dim=0, end_dim=-1):
        return _OPS["flatten"](self, start_dim, end_dim)

    def view(self, *shape):
        return _OPS["reshape"](self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    reshape = view

    # comparisons give plain boolean arrays: they have no gradient
    def __lt__(self, other):
        return self.data < _raw(other)

    def __le__(self, other):
        return self.data <= _raw(other)

    def __gt__(self, other):
        return self.data > _raw(other)

    def __ge__(self, other):
        return self.data >= _raw(other)

    def __bool__(self):
        raise TypeError("bool(ck.Tensor) is ambiguous; compare tensor.item() or tensor.data in a Python `if`")

    # ---------------------------------------------------------------- what cnnkit cannot differentiate
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        arith = {"add": "__radd__", "multiply": "__rmul__", "subtract": "__rsub__"}
        if method == "__call__" and ufunc.__name__ in arith and len(inputs) == 2 and not kwargs \
                and inputs[1] is self and not isinstance(inputs[0], Tensor):
            return getattr(self, arith[ufunc.__name__])(inputs[0])   # array + tensor: recorded as tensor + array
        raise _not_differentiable(f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}"))

    def __array_function__(self, func, types, args, kwargs):
        raise _not_differentiable(f"numpy.{func.__name__}")

    def __array__(self, dtype=None, copy=None):
        raise TypeError("converting a ck.Tensor to an array (np.asarray, np.array) would drop its record, so no "
                        "gradient would flow through it; use tensor.data for the array")

    def __getitem__(self, key):
        raise _not_differentiable("indexing (tensor[...])")

    def __setitem__(self, key, value):
        raise TypeError("ck.Tensor does not support assignment into it (in-place changes would break the recorded "
                        "backward); build a new value with cnnkit.functional ops")

    __hash__ = object.__hash__

    # ---------------------------------------------------------------- backward
    def backward(self, gradient=None):
        """Backpropagate from this value: parameter gradients accumulate (+=) into ``p.grad``, leaves made with
        requires_grad=True get ``.grad``. A one-element value (a loss) needs no `gradient`; otherwise pass one
        of this value's shape and dtype. The record is released afterwards."""
        if gradient is None:
            if self.data.size != 1:
                raise ValueError(f"Tensor.backward: gradient is required for a non-scalar value (shape {self.shape});"
                                 f" pass one of that shape, or call backward on a scalar loss")
            gradient = array_module(self.data).ones(self.data.shape, dtype=self.data.dtype)
        else:
            gradient = _check_grad("Tensor.backward", "gradient", gradient, self.data)
        backward([(self, gradient)])


def _raw(v):
    return v.data if isinstance(v, Tensor) else v


def _neg(v):
    if isinstance(v, (Tensor, Parameter)):
        return _OPS["mul"](v, -1.0)
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return -v
    if isinstance(v, np.ndarray) or is_device_array(v):
        return -v
    raise TypeError(f"subtraction: expected a ck.Tensor, an array or a number, got {type(v).__name__}")


def _check_grad(op, name, g, like):
    g = g.data if isinstance(g, Tensor) else np.asarray(g) if isinstance(g, np.generic) else g
    if not (isinstance(g, np.ndarray) or is_device_array(g)):
        raise TypeError(f"{op}: {name} must be an array, got {type(g).__name__}")
    if tuple(g.shape) != tuple(like.shape):
        raise ValueError(f"{op}: {name} must have the output's shape {tuple(like.shape)}, got {tuple(g.shape)}")
    if g.dtype != like.dtype:
        raise TypeError(f"{op}: {name} must have the output's dtype ({like.dtype}; no silent casts), got {g.dtype}")
    if is_device_array(g) != is_device_array(like):
        raise TypeError(f"{op}: {name} must be on the output's device ({'GPU' if is_device_array(like) else 'CPU'})")
    return g


def lift(v, op, name):
    """An operand as a Tensor: a Tensor as it is, a Parameter as a leaf feeding its .grad, a numpy / CuPy
    array as a constant. Anything else is a TypeError naming the op and the argument."""
    if isinstance(v, Tensor):
        return v
    if isinstance(v, Parameter):
        t = Tensor._make(v.data, None)
        t._param = v
        return t
    if isinstance(v, np.ndarray) or is_device_array(v):
        return Tensor._make(v, None)
    raise TypeError(f"{op}: {name} must be a ck.Tensor, a Parameter or an array, got {_describe(v)}")


def record(fn, inputs, out, saved, name, own=()):
    """The output Tensor of one call: `out` (an array) with a node holding `fn` (the backward), the input
    Tensors and `saved`; without a node under no_grad. `own`: Parameters the call updates itself in
    backward (a layer's), which make it needed even when no input is."""
    if not grad_enabled():
        return Tensor._make(out, None)
    return Tensor._make(out, _Node(fn, inputs, saved, name, own))


# ---------------------------------------------------------------- layers
def _layer_backward(saved, g, needs):
    layer, cache, spec, n = saved
    layer._cache, layer._out_spec = cache, spec
    try:
        d = layer.backward(g, need_dx=needs[0] if n == 1 else tuple(needs))
    finally:
        layer._cache = None
    grads_ready(layer)
    return (d,) if n == 1 else tuple(d)


def _check_layer_input(layer, v, i, n):
    what = "input" if n == 1 else f"input {i}"
    if isinstance(v, (Tensor, Parameter)):
        return
    if not (isinstance(v, np.ndarray) or is_device_array(v)):
        raise TypeError(f"{layer.label()}: {what} must be a ck.Tensor or an array, got {_describe(v)}")


def call_layer(layer, args):
    """One call of a built-in layer, recorded: forward on the arrays, its cache moved into the node."""
    if getattr(layer, "_nodes", None) is not None:    # a Sequential or a Graph
        return _call_model(layer, args)
    for i, a in enumerate(args):
        _check_layer_input(layer, a, i, len(args))
    ins = [lift(a, layer.label(), "input") for a in args]
    datas = [t.data for t in ins]
    _save_undo(layer)
    fwd = layer.forward if _profiler.active is None else _profiler.timed(layer, "forward", layer.forward)
    if not grad_enabled():
        try:
            y = fwd(*datas)
        finally:
            layer._cache = None
        _traced(layer, ins, y)
        return _hooks(layer, ins, Tensor._make(y, None))
    try:
        y = fwd(*datas)
        cache, spec = layer._cache, layer._out_spec
    finally:
        layer._cache = None
    own = tuple(layer._params.values())
    out = Tensor._make(y, _Node(_layer_backward, ins, (layer, cache, spec, len(ins)), layer.label(), own))
    return _hooks(layer, ins, out)


def _traced(layer, ins, y):
    trace = getattr(_state, "trace", None)
    if trace is not None:
        trace.append((layer, [tuple(t.data.shape) for t in ins], tuple(y.shape)))


def _hooks(layer, ins, out):
    hooks = layer.__dict__.get("_forward_hooks")
    if hooks:
        for h in list(hooks.values()):
            r = h(layer, tuple(ins), out)
            if r is not None:
                out = r
    return out


def _call_model(model, args):
    """A Sequential or Graph inside a recorded forward: its layers called one by one in topological order, so
    each is recorded (a Module among them runs its own forward)."""
    shapes = getattr(model, "_input_shapes", None)
    if shapes is not None:
        for a, nm, want in zip(args, model._input_names, shapes):
            if want is not None and hasattr(a, "shape") and tuple(a.shape[1:]) != want:
                raise ValueError(f"{model.label()}: input '{nm}' was declared with shape (N, "
                                 f"{', '.join(map(str, want))}), got {tuple(a.shape)}")
    if len(args) != model._n_inputs:
        raise ValueError(f"{type(model).__name__}.forward: expected {model._n_inputs} input(s), got {len(args)}")
    vals = []
    with _Recording(), _profiler.layer_range(model, "forward"):
        for _, layer, ins in model._nodes:
            v = layer(*[args[-1 - j] if j < 0 else vals[j] for j in ins])
            # a layer called for (output, extras), as MaxPool2d(return_indices=True), passes its output on
            vals.append(v[0] if isinstance(v, tuple) else v)
    return _hooks(model, [lift(a, model.label(), "input") for a in args], vals[-1])


# ---------------------------------------------------------------- the engine
def _order(roots):
    """Nodes reachable from the roots, inputs before the nodes that use them (iterative DFS post-order)."""
    order, state = [], {}
    for t in roots:
        if t._node is None:
            continue
        stack = [(t._node, False)]
        while stack:
            nd, done = stack.pop()
            if done:
                order.append(nd)
                continue
            if id(nd) in state:
                continue
            if nd.released:
                raise RuntimeError(f"backward: the record of {nd.name} was already released by an earlier backward "
                                   f"(one backward per forward); run the forward again")
            state[id(nd)] = True
            stack.append((nd, True))
            for src in nd.inputs:
                if type(src) is _Node and id(src) not in state:
                    stack.append((src, False))
    return order


@_profiler.traced("autograd.backward", "backward")
def backward(pairs, wanted=()):
    """Run the recorded backward of every root in `pairs` [(tensor, gradient)]; returns the gradients of the
    `wanted` leaf Tensors (None for one nothing reached). Releases every node it ran."""
    roots = [t for t, _ in pairs]
    order = _order(roots)
    want = {id(t) for t in wanted}

    def leaf_needs(t):
        return (t._param is not None and t._param.requires_grad) or t.requires_grad or id(t) in want

    needs = {}
    for nd in order:
        own = any(p.requires_grad for p in nd.own)
        needs[id(nd)] = own or any(needs[id(s)] if type(s) is _Node else leaf_needs(s) for s in nd.inputs)
    grads = {}      # id(node) or id(leaf tensor) -> gradient so far (summed out of place over every use)
    leaves = {}

    def add(key, g):
        grads[key] = g if key not in grads else grads[key] + g

    for t, g in pairs:
        if t._node is None:
            if leaf_needs(t):
                leaves[id(t)] = t
                add(id(t), g)
        else:
            add(id(t._node), g)
    try:
        for nd in reversed(order):
            g = grads.pop(id(nd), None)
            if g is None or not needs[id(nd)]:
                continue
            ins = nd.inputs
            flags = [needs[id(s)] if type(s) is _Node else leaf_needs(s) for s in ins]
            ds = (nd.fn(nd.saved, g, flags) if _profiler.active is None else _profiler.node_backward(
                nd.saved[0] if nd.fn is _layer_backward else nd.name, nd.fn, nd.saved, g, flags))
            for s, w, d in zip(ins, flags, ds):
                if not w or d is None:
                    continue
                if type(s) is _Node:
                    add(id(s), d)
                else:
                    leaves[id(s)] = s
                    add(id(s), d)
    finally:
        for nd in order:
            nd.inputs, nd.saved, nd.released = (), None, True
    out = [grads.get(id(t)) for t in wanted]
    for key, t in leaves.items():
        g = grads.get(key)
        if g is None:
            continue
        if t._param is not None and t._param.requires_grad:
            t._param.grad += g
        if t.requires_grad:
            t.grad = g if t.grad is None else t.grad + g
    return out


def as_array(out):
    """A model's output as arrays: a Tensor's data (tuples and lists element by element); arrays as they are."""
    if isinstance(out, Tensor):
        return out.data
    if isinstance(out, (tuple, list)):
        return type(out)(as_array(o) for o in out)
    return out


__all__ = ["Tensor", "no_grad", "is_recording"]
