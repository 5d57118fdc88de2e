"""The one CPU/GPU switch: which kernel module serves an array.

``kernels(a)`` is ``cnnkit._C`` for a numpy array and ``cnnkit.ops._cuda`` (the same entry points with the
same signatures, taking CuPy arrays) for a device array. Every caller that picks a device goes through here,
which makes it the profiler's one hook for kernel calls: while a profile records, each kernel runs in a range.
"""
from .. import _C
from .. import profiler as _profiler
from .._xp import is_device_array


def on_device(a):
    """True for a CuPy array (never imports CuPy)."""
    return is_device_array(a)


def kernels(a):
    """The kernel module for `a`'s device: ``_C`` on the CPU, ``ops._cuda`` on the GPU."""
    if is_device_array(a):
        from . import _cuda
        return _cuda if _profiler.active is None else _profiler.kernels(_cuda)
    return _C if _profiler.active is None else _profiler.kernels(_C)
