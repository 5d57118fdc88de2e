"""Scalar argument checks shared by the whole package: each names the operation and the argument, says what
was expected and what came, and raises TypeError (wrong type) or ValueError (out of range).

The array checks at the end are device-agnostic: the same checks and messages for numpy and CuPy arrays.
Imports only cnnkit's leaf modules (_xp; cuda and _C lazily), so any module may use it without an import cycle.
"""
import math
import numbers
from collections import namedtuple

import numpy as np

from ._xp import is_device_array, require_cupy


def check_int(op, name, v, minimum=None):
    """An int (numpy integers too; not a bool), >= minimum when given."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
    return v


def check_float(op, name, v, lo=None, hi=None):
    """A finite real number (not a bool), within [lo, hi] when given."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{op}: {name} must be finite, got {v}")
    if lo is not None and v < lo:
        raise ValueError(f"{op}: {name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{op}: {name} must be <= {hi}, got {v}")
    return v


def check_flag(op, name, v):
    """A flag argument: a bool or numpy.bool_. Anything else is refused, since bool("no") is True."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(v).__name__}")
    return bool(v)


# ---------------------------------------------------------------- optimizer and schedule hyperparameters
# Real numbers that may be infinite (an lr bound, a clip threshold), refused when NaN; the messages name the
# bound as "invalid <name> <value> (must be ...)".

def check_real(op, name, v):
    """A real number (not a bool), not NaN; infinities pass."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if np.isnan(v):
        raise ValueError(f"{op}: {name} must not be NaN")
    return v


def check_nonneg(op, name, v):
    """A real number >= 0 (check_real first)."""
    v = check_real(op, name, v)
    if v < 0:
        raise ValueError(f"{op}: invalid {name} {v} (must be >= 0)")
    return v


def check_positive(op, name, v):
    """A real number > 0 (check_real first)."""
    v = check_real(op, name, v)
    if not v > 0:
        raise ValueError(f"{op}: invalid {name} {v} (must be > 0)")
    return v


def check_unit(op, name, v):
    """A real number in [0, 1) (check_real first): a moment's decay rate."""
    v = check_real(op, name, v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{op}: invalid {name} {v} (must be in [0, 1))")
    return v


def check_bounded(op, name, v, lo=None, lo_open=False, hi=None, hi_open=False):
    """A real number (not a bool, not NaN) within the given bounds, each closed or open."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if np.isnan(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or \
            (hi is not None and (v >= hi if hi_open else v > hi)):
        lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
        raise ValueError(f"{op}: invalid {name} {v} (must be {' and '.join(s for s in (lo_s, hi_s) if s)})")
    return v


def check_count(op, name, v, lo):
    """An int (not a bool) >= lo, refused as "invalid <name> <value> (must be >= lo)"."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{op}: invalid {name} {v} (must be >= {lo})")
    return int(v)


# ---------------------------------------------------------------- layer constructor arguments

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_positive_int(op, name, v):
    """An int (numpy integers too; not a bool) >= 1; ValueError otherwise (as the layers report it)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    return int(v)


def check_prob(op, p, hi_inclusive=False):
    """A drop probability p: a real number (not a bool) in [0, 1), or [0, 1] with hi_inclusive."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: p must be a float, got {type(p).__name__}")
    p = float(p)
    if not (0.0 <= p < 1.0 or (hi_inclusive and p == 1.0)):
        raise ValueError(f"{op}: p (the drop probability) must be in [0, 1{']' if hi_inclusive else ')'}, got {p}")
    return p


def check_choice(op, name, value, choices, none_ok=False):
    """One of the strings in `choices` (or None where none_ok): TypeError for a non-string, ValueError for
    another string, both naming the argument and listing the choices."""
    if value is None and none_ok:
        return None
    allowed = ", ".join(repr(a) for a in choices) + (" or None" if none_ok else "")
    if not isinstance(value, str):
        raise TypeError(f"{op}: {name} must be one of {allowed}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {allowed}, got {value!r}")
    return value


def check_float_dtype(op, dtype):
    """A dtype (anything np.dtype takes) that is float32 or float64."""
    dtype = np.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype}")
    return dtype


# ---------------------------------------------------------------- array checks
# An op's first array picks the device: a numpy array the CPU, a CuPy array its GPU. first_array returns a
# Ref (the first array's name, and None or the GPU index) that the checks of every other array take.

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
MAX_DIM = 2**62

Ref = namedtuple("Ref", "name gpu")


def first_array(op, name, a, ndim=None, dtype=None):
    """Check the op's first array (which picks the device) and, for a CuPy one, that CUDA is usable."""
    if is_device_array(a):
        from . import cuda
        cuda.require(op)
        ref = Ref(name, a.device.id)
    elif isinstance(a, np.ndarray):
        ref = Ref(name, None)
    else:
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    check_array(op, name, a, ref, ndim, dtype)
    return ref


def check_array(op, name, a, ref, ndim=None, dtype=None):
    """`a` is a C-contiguous float32/float64 array (of `dtype`, with `ndim` dims) on the device of `ref`."""
    on_gpu = ref.gpu is not None
    if is_device_array(a) != on_gpu or not (on_gpu or isinstance(a, np.ndarray)):
        if is_device_array(a) or (on_gpu and isinstance(a, np.ndarray)):
            gpu_name, cpu_name = (ref.name, name) if on_gpu else (name, ref.name)
            raise TypeError(f"{op}: mixed devices: {gpu_name} is a cupy.ndarray (GPU) but {cpu_name} is a "
                            f"numpy.ndarray (CPU); put every array on one device (cupy.asarray(...) or .get())")
        if on_gpu:
            raise TypeError(f"{op}: {name} must be a cupy.ndarray (as {ref.name} is), got {type(a).__name__}")
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    check_layout(op, name, a, ndim, dtype, "cupy" if on_gpu else "numpy")
    if on_gpu:
        # The CUDA kernels get raw pointers: a C-contiguous view may still start off its element size (the
        # CPU bindings check this themselves), and every array must be on the first one's GPU.
        addr, size = a.__cuda_array_interface__["data"][0], a.dtype.itemsize
        if addr % size:
            raise ValueError(f"{op}: {name} must be aligned to {size} bytes ({a.dtype}), got a device address "
                             f"{addr % size} byte(s) past a multiple of {size} (no silent copies are made; pass a "
                             f"copy, e.g. cupy.array({name}))")
        if a.device.id != ref.gpu:
            raise ValueError(f"{op}: {name} is on GPU {a.device.id} but {ref.name} is on GPU {ref.gpu}; "
                             f"every array must be on one device")
    return a


def check_layout(op, name, a, ndim, dtype, lib):
    """dtype (float32/float64, or exactly `dtype`), rank and C-contiguity of a numpy or CuPy array."""
    if dtype is None:
        if a.dtype not in FLOATS:
            raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype}")
    elif a.dtype != dtype:
        raise TypeError(f"{op}: {name} must have dtype {np.dtype(dtype)} (no silent casts), got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (no silent copies are made; "
                         f"use {lib}.ascontiguousarray), got strides {a.strides}")
    return a


def check_out(op, name, out, shape, dtype, ref, inputs=(), in_place=()):
    """Check a caller-supplied output array, or allocate one on ref's device. `inputs`, `in_place`: see
    check_no_alias."""
    if out is None:
        return empty(op, name, shape, dtype, ref)
    check_array(op, name, out, ref, dtype=dtype)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if not out.flags.writeable:
        raise ValueError(f"{op}: {name} must be writable, got a read-only array")
    check_no_alias(op, name, out, inputs, in_place)
    return out


def span(a):
    """The byte range [start, end) of a C-contiguous numpy or CuPy array."""
    start = (a.__cuda_array_interface__ if is_device_array(a) else a.__array_interface__)["data"][0]
    return start, start + a.nbytes


def check_no_alias(op, name, out, inputs, in_place=()):
    """Refuse an output that shares memory with an input: the kernels read their inputs while they write
    the output (and a GEMM reads each input many times), so an overlap gives wrong values.

    inputs: (name, array or None) pairs. in_place: names of inputs of an elementwise op, which `out` may be
    exactly (the same buffer: same start and size, so element i is read before it is written), never partly.
    All arrays are C-contiguous (checked before), so their memory is exactly their byte range.
    """
    o0, o1 = span(out)
    for in_name, a in inputs:
        if a is None or a.nbytes == 0 or out.nbytes == 0:
            continue
        a0, a1 = span(a)
        if o0 < a1 and a0 < o1:
            if in_name in in_place and (o0, o1) == (a0, a1):
                continue
            how = (f"; {name} may be {in_name} itself (in place), but must not partly overlap it"
                   if in_name in in_place else "")
            raise ValueError(f"{op}: {name} must not share memory with {in_name} (the kernel reads {in_name} "
                             f"while it writes {name}; pass a separate array){how}")


def empty(op, name, shape, dtype, ref=None):
    """An uninitialised array on ref's device (the CPU when ref is None), but a shape whose byte size cannot
    be addressed raises naming the op (numpy's own check ignores zero dimensions, as this one does, and
    names nothing)."""
    nbytes = math.prod(int(d) for d in shape if d) * np.dtype(dtype).itemsize
    if nbytes >= 2**63:
        raise ValueError(f"{op}: {name} would have shape {tuple(shape)}, too large to address "
                         f"({nbytes} bytes >= 2**63)")
    if ref is None or ref.gpu is None:
        return np.empty(shape, dtype=dtype)
    cp = require_cupy()
    with cp.cuda.Device(ref.gpu):
        return cp.empty(shape, dtype=dtype)


def check_pair(op, name, v, minimum):
    """An int or a pair of ints (height, width), each >= minimum."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair (h, w), got {tuple(v)}")
        pair = tuple(check_int(op, name, e) for e in v)
    else:
        pair = (check_int(op, name, v),) * 2
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {pair if pair[0] != pair[1] else pair[0]}")
    if max(pair) >= MAX_DIM:
        raise ValueError(f"{op}: {name} must be < 2**62, got {pair}")
    return pair


def check_shape4(op, name, shape):
    """A 4-tuple (N, C, H, W) of ints >= 0 whose element count fits int64 bytes."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"{op}: {name} must be a 4-tuple (N, C, H, W), got {shape!r}")
    out = tuple(check_int(op, name, d, minimum=0) for d in shape)
    if max(out) >= MAX_DIM:
        raise ValueError(f"{op}: {name} dimensions must be < 2**62, got {out}")
    # Python ints do not overflow, so this catches products that would wrap in int64 before C++ sees them.
    if math.prod(out) >= 2**63 // 8:
        raise ValueError(f"{op}: {name} {out} has {math.prod(out)} elements, too many to address "
                         f"(the byte size must fit int64)")
    return out


def check_same_dtype(op, a_name, a, b_name, b):
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: {b_name} must have the dtype of {a_name} ({a.dtype}; no silent casts), got {b.dtype}")


# ---------------------------------------------------------------- fused optimizer steps on a GPU
# A CUDA step kernel gets raw pointers and one element count, g's: each array it reads or writes must hold
# exactly that many elements of g's dtype on g's GPU, and the control block must hold the slots it reads. (The
# CPU bindings check the same in C++.)

def check_step_arrays(op, g, arrays):
    """Check g (the first array) and each (name, array or None) of `arrays`: C-contiguous, g's dtype and
    device, g.size elements. Returns g's Ref."""
    ref = first_array(op, "g", g)
    for name, a in arrays:
        if a is None:
            continue
        check_array(op, name, a, ref, dtype=g.dtype)
        if a.size != g.size:
            raise ValueError(f"{op}: {name} must have {g.size} elements (as g), got {a.size}")
    return ref


def check_ctl(op, ctl, ref, size, groups):
    """An optimizer control block: a 1-D float64 array on ref's device with room for `groups` param groups
    (`size` elements)."""
    check_array(op, "ctl", ctl, ref, ndim=1, dtype=np.float64)
    if ctl.size < size:
        raise ValueError(f"{op}: ctl must have at least {size} elements for {groups} group(s), got {ctl.size}")
    return ctl
