"""maxpool2d: max-pooling with argmax indices, and its gradient."""
import numpy as np

from .. import _C
from .._validate import check_array, check_flag as _flag, check_pair as _pair, check_shape4, empty, first_array
from . import _backend


def maxpool2d_fwd(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max-pooling with argmax, as ``F.max_pool2d(..., return_indices=True)``.

    Returns (y, indices): indices are int64, flat within each (n, c) plane (ih * W + iw). Padding is
    -inf and at most kernel_size/2; ties go to the first maximum in row-major order; NaN propagates.
    """
    op = "maxpool2d_fwd"
    ref = first_array(op, "x", x, ndim=4)
    k = _pair(op, "kernel_size", kernel_size, 1)
    s = k if stride is None else _pair(op, "stride", stride, 1)
    p = _pair(op, "padding", padding, 0)
    d = _pair(op, "dilation", dilation, 1)
    ceil_mode = _flag(op, "ceil_mode", ceil_mode)
    shape = tuple(_C.maxpool2d_out_shape(tuple(x.shape), k, s, p, d, ceil_mode))
    y = empty(op, "y", shape, x.dtype, ref)
    indices = empty(op, "indices", shape, np.int64, ref)
    _backend.kernels(x).maxpool2d_fwd(x, y, indices, k, s, p, d, ceil_mode)
    return y, indices


def maxpool2d_bwd(dy, indices, x_shape):
    """dx: dy scattered through the argmax `indices`, accumulating where windows overlap. On a GPU an index
    outside its plane is skipped instead of raising (checking would need a host sync)."""
    op = "maxpool2d_bwd"
    ref = first_array(op, "dy", dy, ndim=4)
    check_array(op, "indices", indices, ref, ndim=4, dtype=np.int64)
    x_shape = check_shape4(op, "x_shape", x_shape)
    if tuple(indices.shape) != tuple(dy.shape):
        raise ValueError(f"{op}: indices must have the shape of dy {tuple(dy.shape)}, got {tuple(indices.shape)}")
    if tuple(dy.shape[:2]) != x_shape[:2]:
        raise ValueError(f"{op}: dy (N, C) = {tuple(dy.shape[:2])} must match x_shape (N, C) = {x_shape[:2]}")
    dx = empty(op, "dx", x_shape, dy.dtype, ref)
    _backend.kernels(dy).maxpool2d_bwd(dy, indices, dx)
    return dx
