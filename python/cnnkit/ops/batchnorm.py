"""batchnorm: per-channel statistics, the per-channel affine transform and the backward pass."""
import numpy as np

from .._validate import check_array, check_flag as _flag, check_out, empty, first_array
from . import _backend


def _ncs_array(op, name, x):
    ref = first_array(op, name, x)
    if not 2 <= x.ndim <= 4:
        raise ValueError(f"{op}: {name} must be 2-D, 3-D or 4-D (N, C, ...), got shape {tuple(x.shape)}")
    return ref


def batchnorm_stats(x):
    """Per-channel (mean, biased variance) of x (N, C, ...), accumulated in float64, returned in x's dtype
    (on a GPU: in x's dtype, as CuPy's mean)."""
    op = "batchnorm_stats"
    ref = _ncs_array(op, "x", x)
    mean = empty(op, "mean", (x.shape[1],), x.dtype, ref)
    var = empty(op, "var", (x.shape[1],), x.dtype, ref)
    _backend.kernels(x).batchnorm_stats(x, mean, var)
    return mean, var


def channel_affine(x, alpha, beta, out=None):
    """y[:, c] = x[:, c] * alpha[c] + beta[c] for x (N, C, ...): BatchNorm's output transform.
    Pass out=x to work in place; `out` must not otherwise share memory with x, alpha or beta."""
    op = "channel_affine"
    ref = _ncs_array(op, "x", x)
    check_array(op, "alpha", alpha, ref, ndim=1, dtype=x.dtype)
    check_array(op, "beta", beta, ref, ndim=1, dtype=x.dtype)
    y = check_out(op, "out", out, x.shape, x.dtype, ref, inputs=(("x", x), ("alpha", alpha), ("beta", beta)),
                  in_place=("x",))
    _backend.kernels(x).channel_affine(x, alpha, beta, y)
    return y


def batchnorm_bwd(dy, x, mean, invstd, weight=None, train=True, need_dx=True):
    """Backward of y = (x - mean) * invstd * weight + bias. -> (dx or None, sum(dy), sum((x - mean) * dy)),
    the sums per channel in float64 (the bias gradient is the first, the weight gradient the second times
    invstd). With train=True, mean and invstd are the batch statistics of x and depend on it."""
    op = "batchnorm_bwd"
    ref = _ncs_array(op, "x", x)
    train, need_dx = _flag(op, "train", train), _flag(op, "need_dx", need_dx)
    check_array(op, "dy", dy, ref, dtype=x.dtype)
    for name, a in (("mean", mean), ("invstd", invstd)) + ((("weight", weight),) if weight is not None else ()):
        check_array(op, name, a, ref, ndim=1, dtype=x.dtype)
    dx = empty(op, "dx", x.shape, x.dtype, ref) if need_dx else None
    sum_dy = empty(op, "sum_dy", (x.shape[1],), np.float64, ref)
    dotp = empty(op, "dotp", (x.shape[1],), np.float64, ref)
    _backend.kernels(x).batchnorm_bwd(dy, x, mean, invstd, weight, train, dx, sum_dy, dotp)
    return dx, sum_dy, dotp
