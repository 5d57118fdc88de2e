"""dropout: inverted dropout with a counter-based (Philox) mask, and its gradient."""
import numbers

import numpy as np

from .._validate import check_array, check_int as _int, empty, first_array
from . import _backend


def _prob(op, p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: p must be a float, got {type(p).__name__}")
    p = float(p)
    if not (0.0 <= p < 1.0):
        raise ValueError(f"{op}: p (the drop probability) must be in [0, 1), got {p}")
    return p


def dropout_fwd(x, p, seed, offset=0):
    """Inverted dropout: returns (y, mask) with mask uint8 (1 = kept) and y = x * mask / (1 - p).

    `p` is the probability of DROPPING a unit, as in PyTorch and Keras (CS231n's notes use the keep
    probability, 1 - p). The mask is a pure function of (seed, offset, element index) through
    Philox-4x32-10, so it is the same at any thread count and on any device.
    """
    op = "dropout_fwd"
    ref = first_array(op, "x", x)
    p = _prob(op, p)
    seed = _int(op, "seed", seed, minimum=0)
    offset = _int(op, "offset", offset, minimum=0)
    if seed >= 2**64 or offset >= 2**64:
        raise ValueError(f"{op}: seed and offset must be < 2**64, got seed={seed}, offset={offset}")
    y = empty(op, "y", x.shape, x.dtype, ref)
    mask = empty(op, "mask", x.shape, np.uint8, ref)
    _backend.kernels(x).dropout_fwd(x, y, mask, p, seed, offset)
    return y, mask


def dropout_bwd(dy, mask, p):
    """dx = dy * mask / (1 - p)."""
    op = "dropout_bwd"
    ref = first_array(op, "dy", dy)
    check_array(op, "mask", mask, ref, dtype=np.uint8)
    p = _prob(op, p)
    if tuple(mask.shape) != tuple(dy.shape):
        raise ValueError(f"{op}: mask must have the shape of dy {tuple(dy.shape)}, got {tuple(mask.shape)}")
    dx = empty(op, "dx", dy.shape, dy.dtype, ref)
    _backend.kernels(dy).dropout_bwd(dy, mask, dx, p)
    return dx
