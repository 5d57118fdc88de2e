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


def _gather2d(x, ih, iw):
    """x[..., ih[i], iw[j]] for every (i, j): rows and columns picked (and repeated) by index arrays."""
    return array_module(x).ascontiguousarray(x[..., ih[:, None], iw[None, :]])


def _scatter2d(g, ih, iw, H, W):
    """The gradient of _gather2d: each input cell gets the sum of its copies, formed as Mh^T g Mw with the
    one-hot maps Mh (len(ih), H) and Mw (len(iw), W), so every sum is exact and no atomics are needed."""
    xp = array_module(g)
    mh = (ih[:, None] == xp.arange(H)[None, :]).astype(g.dtype)
    mw = (iw[:, None] == xp.arange(W)[None, :]).astype(g.dtype)
    return xp.ascontiguousarray(xp.matmul(xp.matmul(mh.T, g), mw))
