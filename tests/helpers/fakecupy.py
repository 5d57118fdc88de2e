"""A strict stand-in for CuPy, so that the device glue above the CUDA kernels (model.to("cuda"), the layers'
``xp`` code, the optimizer, the trainer, the data loader) is tested on machines with no GPU.

What it is: ``ndarray`` wraps a numpy array and behaves like a CuPy array where cnnkit can tell the difference.
- ``type(a).__module__`` is "cupy", so cnnkit.ops and cnnkit._xp take it for a device array.
- It refuses implicit conversion to numpy (``np.asarray(a)``, numpy ufuncs and functions on it, mixing it with
  a numpy array in an operator, a ``cupy.*`` function or an assignment), as CuPy does or stricter.
- Reductions return 0-d arrays, not Python numbers, as in CuPy; views keep ``.base`` pointing at the owner.
- Every device-to-host read (``.get()``, ``.item()``, ``.tolist()``, ``float()``, ``int()``, ``bool()``,
  ``cupy.asnumpy``, a synchronize) is counted in ``SYNCS`` with the caller's location; host-to-device copies
  in ``H2D``.
- ``install(monkeypatch)`` puts it in sys.modules as ``cupy``, marks cnnkit.cuda usable, and routes each
  ``cnnkit.ops._cuda`` kernel to the ``cnnkit._C`` CPU binding of the same signature (arrays unwrapped; a numpy
  array reaching it is refused), so a "device" run equals a CPU run bit for bit. cnnkit.ops' checks and output
  allocation run on the fake arrays.

What it is not: a GPU. It runs no CUDA code; the kernels in csrc/ops/*.cu are checked by tools/cuda_emu on the
CPU and by tests/test_cuda_*.py on a real GPU.
"""
import contextlib
import inspect
import sys
import traceback
import types

import numpy as np

from .fakecupy_aug import AugBinding

SYNCS = []   # (what, "file:line") of every device-to-host read
H2D = []     # (nbytes, "file:line") of every host-to-device copy


def _where():
    for fr in reversed(traceback.extract_stack()[:-2]):
        if not fr.filename.endswith("fakecupy.py"):
            return f"{fr.filename.rsplit('/', 1)[-1]}:{fr.lineno}"
    return "?"


def _sync(what):
    SYNCS.append((what, _where()))


def reset():
    SYNCS.clear()
    H2D.clear()


def _mixed(v):
    return TypeError(f"Unsupported type {type(v)}: a numpy array cannot meet a (fake) cupy array; "
                     f"use cupy.asarray(...) or .get()")


def _unwrap(v):
    """Fake arrays -> their numpy array; numpy arrays are refused (CuPy takes no host arrays)."""
    if isinstance(v, ndarray):
        return v._a
    if isinstance(v, np.ndarray):
        raise _mixed(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_unwrap(e) for e in v)
    if isinstance(v, dict):
        return {k: _unwrap(e) for k, e in v.items()}
    return v


def _wrap(r, sources=()):
    """numpy results -> fake arrays: the input itself when numpy returned it, a view (base = the input's owner)
    when it shares the input's memory, otherwise a new owner. numpy scalars become 0-d arrays."""
    if isinstance(r, np.generic):
        return ndarray(np.asarray(r))
    if isinstance(r, np.ndarray):
        for s in sources:
            if r is s._a:
                return s
        for s in sources:
            root = s._root()
            if r.base is not None and np.may_share_memory(r, root._a):
                return ndarray(r, base=root)
        return ndarray(r)
    if isinstance(r, tuple):
        return tuple(_wrap(e, sources) for e in r)
    if isinstance(r, list):
        return [_wrap(e, sources) for e in r]
    return r


def _fakes(args):
    out = []
    for a in args:
        if isinstance(a, ndarray):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(_fakes(a))
    return out


class Device:
    """cupy.cuda.Device: a context manager; only device 0 exists."""

    def __init__(self, device=0):
        self.id = int(device)
        if self.id != 0:
            raise ValueError(f"fake cupy: only device 0 exists, got {device}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        return self

    def synchronize(self):
        _sync("Device.synchronize")


class ndarray:
    __module__ = "cupy"
    __array_ufunc__ = None   # numpy ufuncs refuse it, and `numpy_array + fake` falls to our __radd__, which refuses

    def __init__(self, a, base=None):
        if not isinstance(a, np.ndarray):
            raise TypeError("fake cupy.ndarray wraps a numpy array")
        self._a = a
        self._base = base

    def _root(self):
        return self if self._base is None else self._base

    # --- the refusals and the counted host reads
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                        "a NumPy array explicitly.")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} was called on a (fake) cupy array: use the array module (xp) "
                        f"of the array, or .get() it first")

    def get(self, stream=None, order="C", out=None):
        _sync("get")
        return self._a.copy()

    def item(self, *args):
        _sync("item")
        return self._a.item(*args)

    def tolist(self):
        _sync("tolist")
        return self._a.tolist()

    def __float__(self):
        _sync("float")
        return float(self._a)

    def __int__(self):
        _sync("int")
        return int(self._a)

    def __index__(self):
        _sync("index")
        return self._a.__index__()

    def __bool__(self):
        _sync("bool")
        return bool(self._a)

    def __format__(self, spec):
        _sync("format")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __repr__(self):
        return "fakecupy." + repr(self._a)

    # --- what CuPy adds
    @property
    def data(self):
        return types.SimpleNamespace(ptr=int(self._a.ctypes.data))   # cupy's MemoryPointer: .ptr

    @property
    def device(self):
        return Device(0)

    @property
    def base(self):
        return self._base

    @property
    def __cuda_array_interface__(self):
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "data": (int(self._a.ctypes.data), False),
                "version": 3, "strides": None if self._a.flags.c_contiguous else self._a.strides}

    # --- plain attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T, (self,)))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap_index(key)], (self,))

    def __setitem__(self, key, value):
        self._a[_unwrap_index(key)] = _unwrap(value)

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_a", "_base"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return attr

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args), **_unwrap(kwargs)), (self,) + tuple(_fakes(args)))
        return method

    def __copy__(self):
        return ndarray(self._a.copy())

    __deepcopy__ = lambda self, memo: self.__copy__()  # noqa: E731


def _unwrap_index(key):
    if isinstance(key, tuple):
        return tuple(_unwrap_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    return key   # ints, slices, Ellipsis, None, and host index arrays (CuPy copies those over)


def _binop(name):
    def op(self, other):
        r = getattr(self._a, name)(_unwrap(other))
        if r is NotImplemented:
            return r
        return self if r is self._a else _wrap(r, (self,) + tuple(_fakes([other])))
    op.__name__ = name
    return op


for _n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
           "lshift", "rshift"):
    for _p in ("__{}__", "__r{}__", "__i{}__"):
        setattr(ndarray, _p.format(_n), _binop(_p.format(_n)))
for _n in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(ndarray, _n, _binop(_n))
for _n in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _n, (lambda n: lambda self: _wrap(getattr(self._a, n)()))(_n))


# ---------------------------------------------------------------- the module

def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    host = np.array(a, dtype=dtype, order="C", copy=True)
    H2D.append((host.nbytes, _where()))
    return ndarray(host)


def array(a, dtype=None, copy=True, order="K"):
    if isinstance(a, ndarray):
        return ndarray(np.array(a._a, dtype=dtype, copy=True)) if copy else asarray(a, dtype)
    return asarray(a, dtype)


def asnumpy(a, stream=None):
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise _mixed(a) if isinstance(a, np.ndarray) else TypeError(f"Unsupported type {type(a)}")
    r = np.ascontiguousarray(a._a, dtype=dtype)
    return _wrap(r, (a,))


def get_array_module(*args):
    return sys.modules["cupy"] if any(isinstance(a, ndarray) for a in args) else np


class _Stream:
    ptr = 0

    def synchronize(self):
        _sync("Stream.synchronize")

    def wait_event(self, event):
        """GPU-side ordering, no host read; waiting on an event never recorded is a silent no-op in CUDA: refused."""
        if not event.recorded:
            raise RuntimeError("fake cupy: wait_event on an Event that was never recorded")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Event:
    """cupy.cuda.Event: record() marks a point in a stream; a stream's wait_event(event) orders work after it."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.recorded = False

    def record(self, stream=None):
        self.recorded = True

    def synchronize(self):
        _sync("Event.synchronize")


def _numpy_function(name):
    f = np
    for part in name.split("."):
        f = getattr(f, part)
    if not callable(f) or isinstance(f, type):
        return f   # dtypes (cupy.float32), constants

    def fn(*args, **kwargs):
        return _wrap(f(*_unwrap(args), **_unwrap(kwargs)), tuple(_fakes(args)))
    fn.__name__ = name
    return fn


def _module():
    m = types.ModuleType("cupy")
    m.__file__ = __file__
    m.ndarray = ndarray
    for f in (asarray, array, asnumpy, ascontiguousarray, get_array_module):
        setattr(m, f.__name__, f)
    cuda = types.ModuleType("cupy.cuda")
    cuda.Device = Device
    cuda.Stream = _Stream
    cuda.Event = _Event
    cuda.get_current_stream = lambda device=None: _Stream()
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    m.cuda = cuda
    m.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
        sliding_window_view=_numpy_function("lib.stride_tricks.sliding_window_view"),
        as_strided=_numpy_function("lib.stride_tricks.as_strided")))
    m.__getattr__ = _numpy_function   # everything else: the numpy function, strict about host arrays
    return m


# ---------------------------------------------------------------- routing cnnkit.ops._cuda to the CPU kernels

# ops/_cuda functions with the signature of the cnnkit._C CPU binding of the same name (outputs passed in);
# the BatchNorm ones are not routed: their CuPy arithmetic runs on the stand-in's arrays
_VIA_C = ("conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_weight", "conv2d_bwd_bias", "maxpool2d_fwd",
          "maxpool2d_bwd", "dropout_fwd", "dropout_bwd", "matmul", "relu_fwd", "relu_bwd")
# the optimizer steps, also with _C's signatures (in place), plus the keyword-only control-block arguments
# (ctl, group, clip_norm, lr_decay), emulated by _ctl_routed
_VIA_CTL = ("sgd_step", "adagrad_step", "rmsprop_step", "adam_step", "grad_scale_clamp", "maxnorm_rows")


def _routed(cpu):
    def fn(*args):
        cpu(*_unwrap(args))   # the outputs are fake arrays: the kernel writes into their buffers
    return fn


def _ctl_routed(name, device_fn):
    """The CPU binding `name` under the device control block's semantics (csrc/ops/optim.h, OptimCtl), on the
    host: nothing when the block's finite flag is 0.0; otherwise the clip coefficient from the block's sum of
    squares, and (ctl given) the step-dependent scalars from the group's step count, through the same
    cnnkit._C helpers (optim.h's formulas) that the CUDA kernels run."""
    from cnnkit import _C
    sig, cpu, lay = inspect.signature(device_fn), getattr(_C, name), _C.optim_ctl_layout

    def fn(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        kw = dict(bound.arguments)
        ctl, group = kw.pop("ctl", None), kw.pop("group", 0)
        clip_norm, lr_decay = kw.pop("clip_norm", 0.0), kw.pop("lr_decay", 0.0)
        kw = _unwrap(kw)
        if ctl is not None:
            c = _unwrap(ctl)
            if c[lay["finite"]] == 0.0:
                return None
            base = lay["group0"] + lay["per_group"] * group   # this group's slots (the steps only read them)
            t = float(c[base]) + 1.0 if name.endswith("_step") else None
            if clip_norm > 0:
                key = "scale" if name == "grad_scale_clamp" else "gscale"
                kw[key] = kw[key] * _C.clip_coef(clip_norm, float(c[lay["sumsq"]]))
            if name == "adam_step":
                kw["neg_step_size"], kw["bc2_sqrt"] = _C.adam_scalars(-kw["neg_step_size"], kw["beta1"], kw["beta2"], t)
            elif name == "adagrad_step":
                kw["neg_clr"] = -_C.adagrad_clr(-kw["neg_clr"], lr_decay, t)
            elif name == "sgd_step":
                kw["first"] = bool(c[base + 1] != 0.0)
        return cpu(**kw)
    return fn


def _grad_sumsq_device(g, out=None, accumulate=False, workspace=None):
    from cnnkit import _C
    s, f = _C.grad_sumsq(_unwrap(g))
    if out is None:
        return ndarray(np.array([s, 1.0 if f else 0.0]))
    o = _unwrap(out)
    finite = f and (not accumulate or o[1] != 0.0)
    o[0] = o[0] + s if accumulate else s
    o[1] = 1.0 if finite else 0.0
    return out


def _optim_ctl_finish(ctl, groups):
    from cnnkit import _C
    lay, c = _C.optim_ctl_layout, _unwrap(ctl)
    if c[lay["finite"]] == 0.0:
        c[lay["skipped"]] += 1.0
        return
    for gi in range(groups):
        c[lay["group0"] + lay["per_group"] * gi] += 1.0
        c[lay["group0"] + lay["per_group"] * gi + 1] = 0.0


def install(monkeypatch):
    """Make `import cupy` give the stand-in and route cnnkit's device ops to the CPU kernels, for one test.
    The routed conv2d kernels run gemm (the GPU has no Winograd), so the CPU's process-wide conv algorithm
    is pinned to gemm too: a "device" run still equals a CPU run bit for bit."""
    from cnnkit import _C, cuda
    from cnnkit.ops import _cuda as _cuda_ops
    from cnnkit.ops import conv2d as _conv2d
    reset()
    monkeypatch.setattr(_conv2d, "_algorithm", "gemm")
    m = _module()
    monkeypatch.setitem(sys.modules, "cupy", m)
    monkeypatch.setitem(sys.modules, "cupy.cuda", m.cuda)
    monkeypatch.setattr(cuda, "_ok", True)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    for name in _VIA_C:
        monkeypatch.setattr(_cuda_ops, name, _routed(getattr(_C, name)))
    for name in _VIA_CTL:
        monkeypatch.setattr(_cuda_ops, name, _ctl_routed(name, getattr(_cuda_ops, name)))

    def grad_sumsq(g):
        _sync("grad_sumsq")
        return _C.grad_sumsq(_unwrap(g))
    monkeypatch.setattr(_cuda_ops, "grad_sumsq_device", _grad_sumsq_device)
    monkeypatch.setattr(_cuda_ops, "grad_sumsq", grad_sumsq)
    monkeypatch.setattr(_cuda_ops, "_C", AugBinding(_C))
    monkeypatch.setattr(_cuda_ops, "grad_sumsq_workspace", lambda: 2048)
    monkeypatch.setattr(_cuda_ops, "optim_ctl_finish", _optim_ctl_finish)
    return m


@contextlib.contextmanager
def counting():
    """Collect the syncs and host-to-device copies made inside the block: ``with counting() as c: ...;
    c.syncs, c.h2d``."""
    n0, h0 = len(SYNCS), len(H2D)
    box = types.SimpleNamespace(syncs=[], h2d=[])
    try:
        yield box
    finally:
        box.syncs = SYNCS[n0:]
        box.h2d = H2D[h0:]
