"""relu: y = max(x, 0) and its gradient, both allowed in place."""
from .._validate import check_array, check_out, first_array
from . import _backend


def relu_fwd(x, out=None):
    """y = max(x, 0) (NaN propagates). Pass out=x to work in place (no other overlap with x is allowed)."""
    op = "relu_fwd"
    ref = first_array(op, "x", x)
    y = check_out(op, "out", out, x.shape, x.dtype, ref, inputs=(("x", x),), in_place=("x",))
    _backend.kernels(x).relu_fwd(x, y)
    return y


def relu_bwd(dy, y, out=None):
    """dx = dy where y > 0 (or y is NaN), else 0; `y` is the forward output. Pass out=dy (or out=y) to work
    in place; no partial overlap with either is allowed."""
    op = "relu_bwd"
    ref = first_array(op, "dy", dy)
    check_array(op, "y", y, ref, dtype=dy.dtype)
    if tuple(y.shape) != tuple(dy.shape):
        raise ValueError(f"{op}: y must have the shape of dy {tuple(dy.shape)}, got {tuple(y.shape)}")
    dx = check_out(op, "out", out, dy.shape, dy.dtype, ref, inputs=(("dy", dy), ("y", y)), in_place=("dy", "y"))
    _backend.kernels(dy).relu_bwd(dy, y, dx)
    return dx
