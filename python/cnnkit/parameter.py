"""Parameters and the flat buffers that hold them.

A ``Parameter`` pairs ``.data`` with ``.grad`` (same shape and dtype, zeros at first). Layers read
``p.data`` and accumulate into ``p.grad`` in place (``+=``, or a kernel's accumulate mode) every time,
and never keep their own references to either array: an optimizer may move all parameters of a group
into one contiguous ``FlatBuffer``, after which each ``p.data`` / ``p.grad`` is a view into it. Then
zero_grad is one fill, an optimizer step is one fused kernel pass, gradient clipping is one norm and a
checkpoint is one array.
"""
import numpy as np

from ._xp import array_module

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class Parameter:
    """A trainable array: ``.data``, ``.grad`` (zeros at first), ``.name`` and ``.requires_grad``."""

    def __init__(self, data, name=None, requires_grad=True):
        xp = array_module(data)
        if not isinstance(data, xp.ndarray):
            raise TypeError(f"Parameter: data must be a numpy or cupy array, got {type(data).__name__}")
        if np.dtype(data.dtype) not in _FLOATS:
            raise TypeError(f"Parameter: data must be float32 or float64, got {data.dtype}")
        if not data.flags.c_contiguous:
            raise ValueError("Parameter: data must be C-contiguous")
        self.data = data
        self.grad = xp.zeros_like(data)
        self.name = name
        self.requires_grad = bool(requires_grad)

    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: int(self.data.size))

    def numel(self):
        """The number of elements, as torch's Parameter.numel()."""
        return int(self.data.size)

    def zero_grad(self):
        self.grad.fill(0)

    def __repr__(self):
        flag = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter({self.name or '?'}, shape={self.shape}, dtype={self.dtype}{flag})"


class FlatBuffer:
    """One contiguous data buffer and one grad buffer holding every parameter in `params`.

    The current values and gradients are copied in, then each parameter's ``.data`` and ``.grad`` are
    rebound to views of the buffers, so code that reads ``p.data`` sees the same numbers as before.
    All parameters must share one dtype and one array module.
    """

    def __init__(self, params):
        params = list(params)
        if not params:
            raise ValueError("FlatBuffer: params is empty")
        dtypes = {np.dtype(p.dtype) for p in params}
        if len(dtypes) != 1:
            raise TypeError(f"FlatBuffer: parameters must share one dtype, got {sorted(map(str, dtypes))}")
        xp = array_module(params[0].data)
        self.params = params
        self.offsets = []
        total = 0
        for p in params:
            self.offsets.append(total)
            total += p.size
        self.data = xp.empty(total, dtype=params[0].dtype)
        self.grad = xp.empty(total, dtype=params[0].dtype)
        for p, off in zip(params, self.offsets):
            self.data[off:off + p.size] = p.data.reshape(-1)
            self.grad[off:off + p.size] = p.grad.reshape(-1)
        self._view_all(params)

    def _view_all(self, params):
        for p, off in zip(self.params, self.offsets):
            if any(p is q for q in params):
                p.data = self.data[off:off + p.size].reshape(p.shape)
                p.grad = self.grad[off:off + p.size].reshape(p.shape)
                p._flat = self

    def move(self, convert):
        """Give the buffers new arrays ``convert(old)`` (another device) and re-view every parameter that
        still lives in them; the FlatBuffer object, and so an optimizer holding it, stays the same."""
        owned = [p for p in self.params if self.owns(p)]
        self.data = convert(self.data)
        self.grad = convert(self.grad)
        self._view_all(owned)

    @property
    def size(self):
        return int(self.data.size)

    def owns(self, p):
        """True while p.data is still the view this buffer gave it."""
        return any(q is p for q in self.params) and p.data.base is not None and _shares(p.data, self.data)

    def zero_grad(self):
        self.grad.fill(0)


def _shares(view, buf):
    xp = array_module(buf)
    if xp is np:
        return np.shares_memory(view, buf)
    return view.data.ptr >= buf.data.ptr and view.data.ptr < buf.data.ptr + buf.nbytes


# Called as f(layer) after each built-in layer's backward, in a Sequential's or Graph's backward and in a
# ck.Module's recorded one: that use of the layer has added its parameter gradients (cnnkit.distributed
# starts a gradient bucket's all-reduce from here while backward goes on).
grad_ready_listeners = []


def grads_ready(layer):
    for listener in grad_ready_listeners:
        listener(layer)
