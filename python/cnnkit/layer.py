"""The Layer base class: named parameters and buffers, train/eval, forward/backward, shape inference, and
the symbolic Node a layer returns when called on one while a graph is being built."""
import copy
import zlib

import numpy as np

from ._registry import _BASES, _REGISTRY
from ._validate import check_flag as _flag
from ._device import device_converter
from ._xp import array_module, device_of, is_device_array
from .parameter import _FLOATS, Parameter
from . import autograd as _ag
from . import profiler as _profiler


def _fmt_shape(shape):
    if shape is None:
        return "?"
    return "(" + ", ".join("N" if i == 0 and d is None else str(d) for i, d in enumerate(shape)) + ")"


class Node:
    """A symbolic value in a graph being built: the output of `layer` applied to `inputs`.

    ``shape`` excludes the batch dimension (None when it is not known yet)."""

    def __init__(self, layer, inputs, shape, name=None):
        self.layer = layer
        self.inputs = list(inputs)
        self.shape = None if shape is None else tuple(shape)
        self.name = name

    def __repr__(self):
        what = "Input" if self.layer is None else type(self.layer).__name__
        return f"Node({what}, shape={_fmt_shape((None,) + self.shape) if self.shape else '?'})"




class Layer:
    """Base class: named parameters and buffers, train/eval, forward/backward, shape inference.

    Parameters: a layer reads ``p.data`` and accumulates (+=) into ``p.grad`` on every
    call, never keeping its own reference to either, since an optimizer may rebind both to views of one
    FlatBuffer. Activation gradients are returned fresh (=).

    Writing a custom layer (tests/test_gradcheck.py has a worked example, ``Scale``):

    - ``__init__``: call ``super().__init__(name=name)``, then ``self.add_parameter("weight", array)``
      for each parameter (``add_buffer`` for state that is saved but not trained);
    - ``forward(x)``: ``self._check_inputs(x)`` first (float32/float64, the parameters' dtype, a shape
      ``output_shape`` takes); compute y; keep what backward needs in ``self._cache``;
    - ``backward(dy, need_dx=True)``: ``x = self._need_cache(dy)`` (raises if there was no forward, or
      if dy does not have the output's shape and dtype);
      ``p.grad += ...`` for each parameter with ``p.requires_grad``; return dx, or None when
      ``need_dx`` is false (a model passes False when nothing upstream needs it);
    - ``output_shape(x_shape)``: the output shape, or ValueError for inputs the layer cannot take
      (a model uses it to report mismatches between layers before running anything);
    - ``config()``: the constructor's keyword arguments (JSON), so save/load can rebuild it;
    - optionally ``flops(in_shapes, out_shape)`` for summary(), and ``stochastic = True`` with
      ``self.seed`` / ``self.offset`` for a layer that draws random numbers.

    Then check it with ``ck.gradcheck(MyLayer(...), x)``.
    """

    stochastic = False   # True for layers that draw random numbers (they get seed and offset)
    frozen = False       # set by Model.freeze: parameters fixed, and running statistics too (see train)

    _by_config = True    # rebuilt from config() by ck.load: registered by class name (not ck.Module's code)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls._by_config:
            _REGISTRY[cls.__name__] = cls

    def __init__(self, name=None):
        self.training = True
        self.name = name
        self._params = {}
        self._buffers = {}
        self._cache = None
        self._out_spec = None   # (shape, dtype) of the last forward's output: what backward takes as dy
        self.seed = 0      # stream of the model's generator (set by the model), used by stochastic layers
        self.offset = 0    # advanced once per forward call so that every call draws fresh numbers

    # ------------------------------------------------------------ parameters and buffers
    def add_parameter(self, name, data, requires_grad=True):
        p = Parameter(array_module(data).ascontiguousarray(data), name=name, requires_grad=requires_grad)
        self._params[name] = p
        return p

    def add_buffer(self, name, data):
        self._buffers[name] = data
        return data

    def __getattr__(self, name):
        d = self.__dict__
        if "_params" in d and name in d["_params"]:
            return d["_params"][name]
        if "_buffers" in d and name in d["_buffers"]:
            return d["_buffers"][name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def named_parameters(self, prefix=""):
        for n, p in self._params.items():
            yield prefix + n, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for n, b in self._buffers.items():
            yield prefix + n, b

    def named_layers(self, prefix=""):
        """(path, layer) for this layer and every layer inside it."""
        yield prefix.rstrip("."), self

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    # torch.nn.Module's names for the same things, so code can move either way
    def named_modules(self, prefix=""):
        """As named_layers: ("", self) first, then every layer inside with its dotted path."""
        return self.named_layers(prefix)

    def modules(self):
        return [layer for _, layer in self.named_layers()]

    def children(self):
        """The layers directly inside (a model's nodes; none for a plain layer)."""
        return [layer for _, layer, _ in getattr(self, "_nodes", ())]

    def named_children(self):
        """(name, layer) for the layers directly inside (a model's nodes; none for a plain layer)."""
        return [(n, layer) for n, layer, _ in getattr(self, "_nodes", ())]

    def apply(self, fn):
        """fn(layer) for every layer inside, children first, then this one (torch's order). Returns self."""
        for layer in self.children():
            layer.apply(fn)
        fn(self)
        return self

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad on every parameter inside (False freezes them). Returns self."""
        requires_grad = _flag(f"{self.label()}.requires_grad_", "requires_grad", requires_grad)
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{device}")

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def train(self, mode=True):
        """Training mode for every layer inside, except that a layer frozen by Model.freeze that keeps
        running statistics (BatchNorm) stays in inference mode: it normalises with its running mean and
        variance and never updates them, as Keras does for BN layers with trainable=False. (A parameter
        frozen by hand, ``p.requires_grad = False``, does not change the mode: PyTorch's behaviour.)"""
        mode = _flag(f"{self.label()}.train", "mode", mode)
        for _, layer in self.named_layers():
            layer.training = mode and not (layer.frozen and _keeps_running_stats(layer))
        return self

    def eval(self):
        return self.train(False)

    def to(self, target=None, *, device=None, dtype=None):
        """Move and/or cast every parameter (data and grad) and floating buffer, in place: the Parameter
        objects stay, their arrays are replaced, as torch's ``Module.to``. Returns self.

        target: a device ("cpu", "cuda", "cuda:N") or a dtype (np.float32, "float64"); or name them with
        ``device=`` / ``dtype=``. On "cuda" the arrays become CuPy arrays and every layer runs there.
        Parameters that an optimizer holds in a FlatBuffer move with the whole buffer, so the optimizer
        keeps working (its state follows on its next step). A dtype change rebinds p.data to new arrays:
        do it before building an optimizer.
        """
        if target is not None:
            if isinstance(target, str) and (target == "cpu" or target.startswith("cuda")):
                if device is not None:
                    raise ValueError(f"{self.label()}.to: device given twice ({target!r} and {device!r})")
                device = target
            elif dtype is None:
                dtype = target
            else:
                raise ValueError(f"{self.label()}.to: dtype given twice ({target!r} and {dtype!r})")
        if dtype is not None:
            self._cast(dtype)
        if device is not None:
            self._move(device)
        return self

    def _cast(self, dtype):
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"{self.label()}.to: expected a device ('cpu', 'cuda', 'cuda:N') or a float dtype, "
                            f"got {dtype!r}") from None
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"{self.label()}.to: dtype must be float32 or float64, got {dtype}")
        for _, layer in self.named_layers():
            for p in layer._params.values():
                xp = array_module(p.data)
                p.data = xp.ascontiguousarray(p.data, dtype=dtype)
                p.grad = xp.ascontiguousarray(p.grad, dtype=dtype)
            for n, b in layer._buffers.items():
                if np.issubdtype(b.dtype, np.floating):
                    layer._buffers[n] = array_module(b).ascontiguousarray(b, dtype=dtype)

    def _move(self, device):
        convert = device_converter(device, f"{self.label()}.to")
        seen = set()
        for _, layer in self.named_layers():
            for p in layer._params.values():
                flat = getattr(p, "_flat", None)
                if flat is not None and flat.owns(p):
                    if id(flat) not in seen:
                        seen.add(id(flat))
                        flat.move(convert)
                else:
                    p.data, p.grad = convert(p.data), convert(p.grad)
            for n, b in layer._buffers.items():
                layer._buffers[n] = convert(b)
            layer._cache = None

    @property
    def device(self):
        """Where the parameters live: "cpu" or "cuda:N" (a layer without parameters or buffers says "cpu")."""
        for _, layer in self.named_layers():
            for a in [p.data for p in layer._params.values()] + list(layer._buffers.values()):
                return device_of(a)
        return "cpu"

    def copy(self):
        return copy.deepcopy(self)

    def save(self, path):
        """Write weights, buffers and architecture to one safetensors file, atomically; ck.load(path) rebuilds."""
        from .serialize import save
        save(self, path)

    def state_dict(self):
        """name -> a numpy copy of every parameter and buffer, under torch's names ("0.weight",
        "bn1.running_mean", ...), as torch.nn.Module.state_dict (torch's shares storage; these are copies, on
        the host even for a model on a GPU). Same as ck.zoo.export_torch_state_dict(model)."""
        from .state_dict import export_torch_state_dict
        return export_torch_state_dict(self)

    def load_state_dict(self, state_dict, strict=True):
        """Copy a state dict (numpy arrays or torch tensors, by name) into the parameters and buffers in place,
        as torch.nn.Module.load_state_dict: every name and shape is checked before anything is written
        (ck.zoo.StateDictError lists what is missing, unexpected or mismatched). Returns (missing,
        unexpected). Same as ck.zoo.load_torch_state_dict(model, state_dict, strict)."""
        from .state_dict import load_torch_state_dict
        return load_torch_state_dict(self, state_dict, strict=strict)

    # ------------------------------------------------------------ random streams
    def rng_state(self):
        return {path: (l.seed, l.offset) for path, l in self.named_layers() if l.stochastic}

    def set_rng_state(self, state):
        for path, l in self.named_layers():
            if path in state:
                l.seed, l.offset = (int(v) for v in state[path])

    def manual_seed(self, seed):
        """Give every stochastic layer inside its own stream: a 64-bit seed derived from (seed, the
        layer's path), offset 0. Paths, not creation order, so a rebuilt model gets the same streams."""
        for path, l in self.named_layers():
            if l.stochastic:
                key = [int(seed), zlib.crc32(path.encode())]
                l.seed = int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])
                l.offset = 0
        return self

    # ------------------------------------------------------------ the interface a layer implements
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy, need_dx=True):
        raise NotImplementedError

    def output_shape(self, *in_shapes):
        """Output shape for these input shapes (batch included); ValueError for inputs it cannot take."""
        return tuple(in_shapes[0])

    def flops(self, in_shapes, out_shape):
        """Forward floating-point operations (a multiply-add counts 2)."""
        return 0

    def config(self):
        """Constructor keyword arguments, JSON-serialisable (save/load rebuilds the layer from them)."""
        return {}

    @classmethod
    def from_config(cls, cfg):
        return cls(**cfg)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k not in ("name", "seed", "dtype"))

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def label(self):
        return f"{type(self).__name__}" + (f" '{self.name}'" if self.name else "")

    # ------------------------------------------------------------ calling
    def __call__(self, *xs):
        if any(isinstance(x, Node) for x in xs):
            return self._symbolic(xs)
        if _ag.is_recording() or any(isinstance(x, (_ag.Tensor, Parameter)) for x in xs):
            return _ag.call_layer(self, xs)   # inside a Module's forward, or on recorded values: recorded
        for x in xs:
            self._check_array(x, "input")
        y = self.forward(*xs) if _profiler.active is None else _profiler.timed(self, "forward", self.forward)(*xs)
        hooks = self.__dict__.get("_forward_hooks")
        if hooks:
            for h in list(hooks.values()):
                r = h(self, xs, y)
                if r is not None:
                    y = r
        return y

    def register_forward_hook(self, hook):
        """hook(layer, inputs, output) after every call of this layer (torch's signature); a value it returns
        replaces the output. Runs for calls of the layer itself and for calls recorded in a ck.Module's
        forward, not inside a Sequential or Graph called on arrays. Returns a handle: ``handle.remove()``."""
        if not callable(hook):
            raise TypeError(f"{self.label()}.register_forward_hook: hook must be callable, got {type(hook).__name__}")
        hooks = self.__dict__.setdefault("_forward_hooks", {})
        key = max(hooks, default=-1) + 1
        hooks[key] = hook
        return _HookHandle(hooks, key)

    def _symbolic(self, xs):
        if not all(isinstance(x, Node) for x in xs):
            raise TypeError(f"{self.label()}: when building a graph every input must be a Node, "
                            f"got {[type(x).__name__ for x in xs]}")
        shape = None
        if all(x.shape is not None for x in xs):
            shapes = [(1,) + x.shape for x in xs]
            try:
                shape = tuple(self.output_shape(*shapes))[1:]
            except ValueError as e:
                src = ", ".join(f"{_node_label(x)} gives {_fmt_shape((None,) + x.shape)}" for x in xs)
                raise ValueError(f"shape mismatch: {src}, but {self.label()} {self!r} cannot take it: {e}") from None
        return Node(self, xs, shape)

    def _check_array(self, a, what):
        if not (isinstance(a, np.ndarray) or is_device_array(a)):
            raise TypeError(f"{self.label()}: {what} must be a numpy array (or a CuPy array on a GPU), got "
                            f"{type(a).__name__}; convert with np.asarray(x, dtype=np.float32)")

    def _check_inputs(self, *xs):
        """What every forward checks before any work, as the kernels do: each input a float32 or float64
        array, all of one dtype and of the parameters' dtype (no silent casts), and shapes the layer takes.
        Returns the output shape, which (with the dtype) is then the only dy backward takes."""
        label = self.label()
        for i, x in enumerate(xs):
            what = "input" if len(xs) == 1 else f"input {i}"
            self._check_array(x, what)
            if x.dtype not in _FLOATS:
                raise TypeError(f"{label}: {what} must be float32 or float64, got {x.dtype}")
        if len({x.dtype for x in xs}) > 1:
            raise TypeError(f"{label}: every input must have one dtype (no silent casts), got "
                            f"{[str(x.dtype) for x in xs]}")
        p = next(iter(self._params.values()), None)
        if p is not None and xs and xs[0].dtype != p.dtype:
            raise TypeError(f"{label}: input dtype {xs[0].dtype} does not match the parameters' {p.dtype} "
                            f"(no silent casts; use layer.to(dtype))")
        shape = tuple(self.output_shape(*[x.shape for x in xs]))
        self._out_spec = (shape, xs[0].dtype if xs else None)
        return shape

    def _need_cache(self, dy=None, what="backward"):
        """Take what forward cached (one backward per forward). Given dy, first check that it has the
        forward output's shape and dtype: array glue would broadcast a mis-shaped dy into a wrong gradient.
        A refused dy leaves the cache in place."""
        if self._cache is None:
            raise RuntimeError(f"{self.label()}: {what} called before forward (nothing cached; "
                               f"run forward first, once per backward)")
        if dy is not None and self._out_spec is not None:
            self._check_array(dy, "dy")
            shape, dtype = self._out_spec
            if tuple(dy.shape) != shape:
                raise ValueError(f"{self.label()}: dy must have the shape of the forward output {shape}, "
                                 f"got {tuple(dy.shape)}")
            if dy.dtype != dtype:
                raise TypeError(f"{self.label()}: dy must have the dtype of the forward output ({dtype}; "
                                f"no silent casts), got {dy.dtype}")
        c, self._cache = self._cache, None
        return c

    def _check_rank(self, op, x, ranks, meaning):
        if len(x) not in ranks:
            raise ValueError(f"{op}: input must be {meaning}, got shape {tuple(x)}")


class _HookHandle:
    """What register_forward_hook returns: ``handle.remove()`` unregisters the hook."""

    def __init__(self, hooks, key):
        self._hooks, self._key = hooks, key

    def remove(self):
        self._hooks.pop(self._key, None)


def _keeps_running_stats(layer):
    return "running_mean" in layer._buffers or "running_var" in layer._buffers


def _node_label(node):
    if node.layer is None:
        return f"input '{node.name or 'input'}'"
    return node.layer.label() if node.name is None else f"{type(node.layer).__name__} '{node.name}'"


_BASES["Layer"] = Layer

__all__ = ["Layer", "Node"]
