"""Helpers shared by several layer files: (h, w) pairs, contiguity, element counts."""
from .._validate import check_pair
from .._xp import array_module

_pair = check_pair  # (op, name, v, minimum): an int or an (h, w) pair of ints, each >= minimum, else an error naming it


def _cfgpair(v):
    return v[0] if v[0] == v[1] else list(v)


def _contig(a):
    return a if a.flags.c_contiguous else array_module(a).ascontiguousarray(a)


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n
