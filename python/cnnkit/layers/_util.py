"""Helpers shared by several layer files: argument checks, (h, w) pairs, contiguity, element counts."""
import numbers

import numpy as np

from .. import ops
from .._xp import array_module

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))



_pair = ops._pair  # (op, name, v, minimum): an int or an (h, w) pair of ints, each >= minimum, else an error naming it


def _cfgpair(v):
    return v[0] if v[0] == v[1] else list(v)


def _positive_int(op, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    return int(v)


def _prob(op, p, hi_inclusive=False):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: p must be a float, got {type(p).__name__}")
    p = float(p)
    if not (0.0 <= p < 1.0 or (hi_inclusive and p == 1.0)):
        raise ValueError(f"{op}: p (the drop probability) must be in [0, 1{']' if hi_inclusive else ')'}, got {p}")
    return p


def _dtype(op, dtype):
    dtype = np.dtype(dtype)
    if dtype not in _FLOATS:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype}")
    return dtype


def _contig(a):
    return a if a.flags.c_contiguous else array_module(a).ascontiguousarray(a)


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n
