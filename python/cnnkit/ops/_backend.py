"""The one CPU/GPU switch: which kernel module serves an array.

``kernels(a)`` is ``cnnkit._C`` for a numpy array and ``cnnkit.ops._cuda`` (the same entry points with the
same signatures, taking CuPy arrays) for a device array. Every caller that picks a device goes through here.
"""
from .. import _C
from .._xp import is_device_array


def on_device(a):
    """True for a CuPy array (never imports CuPy)."""
    return is_device_array(a)


def kernels(a):
    """The kernel module for `a`'s device: ``_C`` on the CPU, ``ops._cuda`` on the GPU."""
    if is_device_array(a):
        from . import _cuda
        return _cuda
    return _C
