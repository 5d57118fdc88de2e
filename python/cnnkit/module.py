"""ck.Module: a model written as torch.nn.Module is, layers as attributes and a ``forward`` in Python, with
ck.ModuleList and ck.ModuleDict to hold several.

Assigning a Layer (a Module, a Sequential...), a Parameter or a container of them to an attribute registers
it under the attribute's name, so parameter and state-dict names are torch's (``block.conv1.weight``) and a
torch state dict of the same class loads as it is. Calling the module records its forward (cnnkit.autograd):
``loss.backward()`` or ``model.backward(dout)`` then runs the recorded backward routines in reverse.

A Module is a Layer as well: ``module.forward(x)`` on an array outside a recording (what a Sequential, a
Graph or ck.gradcheck does with a layer inside) runs a recorded call and returns the output array, and
``module.backward(dy, need_dx)`` replays that call, so a Module can sit anywhere a layer can.
"""
import functools

import numpy as np

from . import autograd as _ag
from . import profiler as _profiler
from ._registry import _BASES
from ._summary import format_table
from ._xp import array_module, is_device_array
from .layer import Layer, Node, _fmt_shape
from .parameter import Parameter


def _wrap_forward(fn):
    @functools.wraps(fn)
    def forward(self, *args, **kwargs):
        if _ag.is_recording() or any(isinstance(a, _ag.Tensor) for a in args):
            return fn(self, *args, **kwargs)
        # the layer protocol: arrays in, arrays out, the call kept for self.backward
        return _ag.as_array(self(*args, **kwargs))
    forward._ck_user_forward = fn
    return forward


class Module(Layer):
    """Base class for models written the torch way::

        class Net(ck.Module):
            def __init__(self):
                super().__init__()
                self.conv = ck.Conv2d(3, 16, 3, padding=1)
                self.fc = ck.Linear(16, 10)

            def forward(self, x):
                x = F.relu(self.conv(x))
                return self.fc(F.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    Call the module (``net(x)``), not ``net.forward(x)``: the call records the forward and runs the hooks. It
    returns a ck.Tensor; ``ck.nn`` losses take it and return a scalar Tensor with ``.backward()``.
    """

    _by_config = False   # no entry in the layer registry: a Module is Python code, which a model file never holds

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        fwd = cls.__dict__.get("forward")
        if fwd is not None and not hasattr(fwd, "_ck_user_forward"):
            cls.forward = _wrap_forward(fwd)

    def __init__(self, name=None):
        super().__init__(name=name)
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_last", None)
        object.__setattr__(self, "_shape_memo", {})

    # ------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        d = self.__dict__
        if "_modules" not in d or "_params" not in d:
            if isinstance(value, (Layer, Parameter)):
                raise AttributeError(f"{type(self).__name__}: cannot assign {type(value).__name__} '{name}' before "
                                     f"Module.__init__() is called; call super().__init__() first")
            object.__setattr__(self, name, value)
            return
        mods, params = d["_modules"], d["_params"]
        if isinstance(value, Parameter):
            self._forget(name)
            params[name] = value
        elif isinstance(value, Layer):
            self._forget(name)
            mods[name] = value
        elif name in mods or name in params:
            if value is not None:
                kind = "child module" if name in mods else "parameter"
                raise TypeError(f"{type(self).__name__}: cannot assign a {type(value).__name__} to {kind} '{name}' "
                                f"(expected a ck.Layer, a Module, a Parameter or None)")
            self._forget(name)
            object.__setattr__(self, name, None)
        elif name in d.get("_buffers", {}) and value is not None and not name.startswith("_"):
            if not (isinstance(value, np.ndarray) or is_device_array(value)):
                raise TypeError(f"{type(self).__name__}: buffer '{name}' must be an array, got {type(value).__name__}")
            d["_buffers"][name] = value
        else:
            held = (value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple))
                    else ())
            if any(isinstance(v, (Layer, Parameter)) for v in held):
                kind = "ModuleDict" if isinstance(value, dict) else "ModuleList"
                raise TypeError(f"{type(self).__name__}: cannot assign a plain {type(value).__name__} of layers to "
                                f"attribute '{name}': its layers would not be registered (their parameters would be "
                                f"missing from parameters() and state_dict()). Wrap it: ck.{kind}(...)")
            object.__setattr__(self, name, value)

    def _forget(self, name):
        d = self.__dict__
        for reg in (d["_modules"], d["_params"], d["_buffers"]):
            reg.pop(name, None)
        d.pop(name, None)

    def __getattr__(self, name):
        d = self.__dict__
        if "_modules" in d and name in d["_modules"]:
            return d["_modules"][name]
        return super().__getattr__(name)

    def __delattr__(self, name):
        d = self.__dict__
        if name in d.get("_modules", {}) or name in d.get("_params", {}) or name in d.get("_buffers", {}):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def add_module(self, name, module):
        if not isinstance(module, Layer):
            raise TypeError(f"{type(self).__name__}.add_module: module must be a ck.Layer, got "
                            f"{type(module).__name__}")
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{type(self).__name__}.add_module: name must be a non-empty str without '.', got "
                             f"{name!r}")
        self._forget(name)
        self.__dict__["_modules"][name] = module

    register_module = add_module

    def register_parameter(self, name, param):
        if not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}.register_parameter: param must be a ck.Parameter, got "
                            f"{type(param).__name__}")
        self._forget(name)
        self.__dict__["_params"][name] = param

    def register_buffer(self, name, array):
        """A saved, untrained array (in state_dict() and moved by to()), as torch's register_buffer."""
        if not (isinstance(array, np.ndarray) or is_device_array(array)):
            raise TypeError(f"{type(self).__name__}.register_buffer: array must be a numpy or CuPy array, got "
                            f"{type(array).__name__}")
        self._forget(name)
        self.__dict__["_buffers"][name] = array
        return array

    # ------------------------------------------------------------ the tree
    def named_children(self):
        """(name, layer) for each registered child, in assignment order."""
        yield from self.__dict__["_modules"].items()

    def children(self):
        return [m for _, m in self.named_children()]

    def named_layers(self, prefix="", _seen=None):
        """(dotted path, layer) for this module and every layer inside it, each once (as torch's named_modules)."""
        seen = set() if _seen is None else _seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix.rstrip("."), self
        for n, m in self.named_children():
            if isinstance(m, Module):
                yield from m.named_layers(prefix + n + ".", seen)
            else:
                for path, layer in m.named_layers(prefix + n + "."):
                    if id(layer) not in seen:
                        seen.add(id(layer))
                        yield path, layer

    def named_parameters(self, prefix=""):
        seen = set()
        for path, layer in self.named_layers():
            pre = prefix + (path + "." if path else "")
            for n, p in layer._params.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield pre + n, p

    def named_buffers(self, prefix=""):
        for path, layer in self.named_layers():
            pre = prefix + (path + "." if path else "")
            for n, b in layer._buffers.items():
                yield pre + n, b

    def _move(self, device):
        super()._move(device)
        object.__setattr__(self, "_last", None)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_last"] = None   # a recorded call is not copied with the model
        return state

    # ------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}: a ck.Module subclass must define forward(self, ...)")

    def __call__(self, *args, **kwargs):
        if any(isinstance(a, Node) for a in args):
            return self._symbolic(args)
        if _ag.is_recording():
            return self._run(args, kwargs)
        object.__setattr__(self, "_last", None)   # a failed call leaves no earlier record to backward through
        with _ag._Recording():
            leaves = tuple(_ag.Tensor._make(a, None) if isinstance(a, np.ndarray) or is_device_array(a) else a
                           for a in args)
            out = self._run(leaves, kwargs)
        if _ag.grad_enabled():
            object.__setattr__(self, "_last", (tuple(t for t in leaves if isinstance(t, _ag.Tensor)), out))
        return out

    def _run(self, args, kwargs):
        fwd = self.forward if _profiler.active is None else _profiler.timed(self, "forward", self.forward)
        out = fwd(*args, **kwargs)
        hooks = self.__dict__.get("_forward_hooks")
        if hooks:
            for h in list(hooks.values()):
                r = h(self, args, out)
                if r is not None:
                    out = r
        return out

    def backward(self, dout, need_dx=False):
        """Backpropagate dout (the gradient of the loss w.r.t. the last call's output) through that call's
        record; parameter gradients accumulate. Returns the input gradient (a tuple for several inputs) when
        need_dx is true, else None. One backward per call."""
        last = self.__dict__.get("_last")
        op = f"{self.label()}.backward"
        if last is None:
            raise RuntimeError(f"{op}: called before forward (nothing recorded; call the module first, once per "
                               f"backward)")
        leaves, out = last
        if not isinstance(out, _ag.Tensor):
            raise TypeError(f"{op}: the forward returned a {type(out).__name__}; backward(dout) takes the gradient "
                            f"of a single Tensor output (call .backward() on a loss instead)")
        dout = _ag._check_grad(op, "dout", dout, out.data)
        object.__setattr__(self, "_last", None)
        want = need_dx if isinstance(need_dx, (tuple, list)) else (bool(need_dx),) * len(leaves)
        wanted = [t for t, w in zip(leaves, want) if w]
        got = _ag.backward([(out, dout)], wanted)
        if not any(want):
            return None
        res = iter(got)
        dxs = []
        for t, w in zip(leaves, want):
            g = next(res) if w else None
            dxs.append(array_module(t.data).zeros_like(t.data) if w and g is None else g)
        return dxs[0] if len(leaves) == 1 else tuple(dxs)

    # ------------------------------------------------------------ shapes, summary
    def _trace(self, in_shapes):
        """Run the forward once on zeros of these shapes, in eval mode and recording nothing; returns the output
        shape and every built-in layer call (layer, input shapes, output shape)."""
        p = next((q for q in self.parameters()), None)
        dtype = p.dtype if p is not None else np.float32
        xp = array_module(p.data) if p is not None else np
        calls = []
        modes = [(layer, layer.training) for _, layer in self.named_layers()]
        prev = getattr(_ag._state, "trace", None)
        _ag._state.trace = calls
        try:
            self.eval()
            with _ag.no_grad():
                out = self(*[xp.zeros(tuple(s), dtype=dtype) for s in in_shapes])
        finally:
            _ag._state.trace = prev
            for layer, mode in modes:
                layer.training = mode
        return tuple(_ag.as_array(out).shape), calls

    def output_shape(self, *in_shapes):
        """The output shape, found by running the forward once on zeros of these shapes (in eval mode, nothing
        recorded; remembered per input shape)."""
        key = tuple(tuple(s) for s in in_shapes)
        memo = self.__dict__["_shape_memo"]
        if key not in memo:
            try:
                memo[key] = self._trace(key)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{self.label()}: cannot take inputs of shape {list(key)}: {e}") from None
            if len(memo) > 8:
                memo.pop(next(iter(memo)))
        return memo[key][0]

    def flops(self, in_shapes, out_shape):
        self.output_shape(*in_shapes)
        return sum(layer.flops(ins, out) for layer, ins, out in self._shape_memo[tuple(map(tuple, in_shapes))][1])

    def summary(self, input_shape, print_fn=print):
        """Print (and return) a table of the built-in layers one forward calls, in call order: path, type, output
        shape, parameters (counted at a layer's first call) and forward FLOPs for one sample. input_shape
        excludes the batch dimension."""
        if input_shape is None:
            raise ValueError(f"{type(self).__name__}.summary: input_shape is required (e.g. (3, 32, 32))")
        shapes = [input_shape] if not isinstance(input_shape[0], (tuple, list)) else list(input_shape)
        shapes = [(1,) + tuple(s) for s in shapes]
        _, calls = self._trace(shapes)
        paths = {id(layer): path for path, layer in self.named_layers()}
        rows = [("layer", "type", "output shape", "params", "FLOPs")]
        seen, tp, tf = set(), 0, 0
        for layer, ins, out in calls:
            n = 0 if id(layer) in seen else sum(p.size for p in layer._params.values())
            seen.add(id(layer))
            fl = layer.flops(ins, out)
            tp, tf = tp + n, tf + fl
            rows.append((paths.get(id(layer), layer.name or "(functional)"), type(layer).__name__,
                         _fmt_shape((None,) + tuple(out[1:])), f"{n:,}", f"{fl:,}"))
        allp = sum(p.size for p in self.parameters())
        ntrain = sum(p.size for p in self.parameters() if p.requires_grad)
        rows.append(("total", "", "", f"{allp:,}", f"{tf:,}"))
        return format_table(rows, f"trainable params: {ntrain:,}   input {_fmt_shape((None,) + tuple(shapes[0][1:]))}"
                                  f"   FLOPs per sample (forward, multiply-add = 2); layers in call order", print_fn)

    # ------------------------------------------------------------ freezing
    def _layer_at(self, path):
        layer = self
        for part in path.split("."):
            kids = dict(layer.named_children()) if hasattr(layer, "named_children") else {}
            if part not in kids:
                raise ValueError(f"{type(self).__name__}: no layer '{path}' ('{part}' is not one of {list(kids)})")
            layer = kids[part]
        return layer

    def freeze(self, *names):
        """Freeze the named layers (dotted paths), or everything: requires_grad = False for their parameters,
        and their BatchNorm layers stay in inference mode (see Layer.train). Returns self."""
        from .graph import Model
        targets = [self._layer_at(n) for n in names] or [self]
        Model._set_frozen(self, targets, True)
        return self

    def unfreeze(self, *names):
        from .graph import Model
        targets = [self._layer_at(n) for n in names] or [self]
        Model._set_frozen(self, targets, False)
        return self

    # ------------------------------------------------------------ files
    def config(self):
        raise TypeError(f"{type(self).__name__} is a ck.Module subclass: Python code, which a cnnkit model file never "
                        f"holds. Save its weights instead (ck.zoo.export_torch_state_dict(model, 'w.safetensors')), "
                        f"rebuild {type(self).__name__}(...) in code and load them with model.load_state_dict(...)")

    def extra_repr(self):
        return ""

    def __repr__(self):
        body = "".join(f"\n  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self.named_children())
        return f"{type(self).__name__}({body}\n)" if body else f"{type(self).__name__}()"


class ModuleList(Module):
    """A list of layers registered as children "0", "1", ..., as torch.nn.ModuleList. Not callable itself."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        if not isinstance(module, Layer):
            raise TypeError(f"ModuleList.append: expected a ck.Layer or Module, got {type(module).__name__}")
        self.__dict__["_modules"][str(len(self))] = module
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __len__(self):
        return len(self.__dict__["_modules"])

    def __iter__(self):
        return iter(list(self.__dict__["_modules"].values()))

    def __getitem__(self, i):
        mods = list(self.__dict__["_modules"].values())
        if isinstance(i, slice):
            return ModuleList(mods[i])
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"ModuleList: index with an int or a slice, got {type(i).__name__}")
        if not -len(mods) <= i < len(mods):
            raise IndexError(f"ModuleList: index {i} out of range for {len(mods)} layers")
        return mods[i]

    def __setitem__(self, i, module):
        if not isinstance(module, Layer):
            raise TypeError(f"ModuleList: expected a ck.Layer or Module, got {type(module).__name__}")
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(f"ModuleList: index {i!r} out of range for {n} layers")
        self.__dict__["_modules"][str(i % n)] = module

    def forward(self, *args, **kwargs):
        raise TypeError("ModuleList is not callable: iterate over it in forward (for layer in self.layers: "
                        "x = layer(x))")


class ModuleDict(Module):
    """A dict of layers registered under their keys, as torch.nn.ModuleDict. Not callable itself."""

    def __init__(self, modules=None):
        super().__init__()
        for k, m in (dict(modules) if modules is not None else {}).items():
            self[k] = m

    def __setitem__(self, key, module):
        if not isinstance(module, Layer):
            raise TypeError(f"ModuleDict: value for {key!r} must be a ck.Layer or Module, got {type(module).__name__}")
        self.add_module(key, module)

    def __getitem__(self, key):
        mods = self.__dict__["_modules"]
        if key not in mods:
            raise KeyError(f"ModuleDict: no layer {key!r}; the keys are {list(mods)}")
        return mods[key]

    def __delitem__(self, key):
        self.__dict__["_modules"].pop(key)

    def __contains__(self, key):
        return key in self.__dict__["_modules"]

    def __len__(self):
        return len(self.__dict__["_modules"])

    def __iter__(self):
        return iter(list(self.__dict__["_modules"]))

    def keys(self):
        return list(self.__dict__["_modules"].keys())

    def values(self):
        return list(self.__dict__["_modules"].values())

    def items(self):
        return list(self.__dict__["_modules"].items())

    def forward(self, *args, **kwargs):
        raise TypeError("ModuleDict is not callable: pick a layer by key in forward (self.heads['a'](x))")


_BASES["Module"] = Module

__all__ = ["Module", "ModuleList", "ModuleDict"]
