"""The validated face of the compiled kernels (``cnnkit._C``).

Every function checks its arguments and raises ``TypeError`` (wrong type or dtype) or ``ValueError``
(wrong shape, layout or value) with a message naming the op and the argument, then allocates the outputs
and calls the kernel. Nothing is copied or cast silently: inputs must be C-contiguous float32 or float64
arrays of one dtype. Shapes follow PyTorch: NCHW activations, (K, C/groups, R, S) conv weights.

An ``out=`` array must not share memory with any input (ValueError naming both): the kernels read their
inputs while they write it. Only the elementwise ops may work in place, on the very same buffer:
``relu_fwd(x, out=x)``, ``relu_bwd(dy, y, out=dy)`` (or ``out=y``), ``channel_affine(x, ..., out=x)``.

Device dispatch: when the first array argument is a CuPy array, the op runs on the GPU through
``cnnkit.ops._cuda`` (same checks and messages, outputs allocated with CuPy, kernels queued on CuPy's current
stream). The numpy branch stays first: it costs one ``isinstance`` check. A numpy array mixed with a CuPy
one raises TypeError naming both arguments.
"""
import math
import numbers

import numpy as np

from .. import _C
from .._validate import check_flag as _flag, check_int as _int
from .._xp import is_device_array as _on_device  # a CuPy array? (never imports cupy)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_MAX_DIM = 2**62

# The first array argument of each op: the one whose type picks the device.
_FIRST = {"conv2d_fwd": "x", "conv2d_bwd_data": "dy", "conv2d_bwd_weight": "dy", "conv2d_bwd_bias": "dy",
          "maxpool2d_fwd": "x", "maxpool2d_bwd": "dy", "dropout_fwd": "x", "dropout_bwd": "dy", "matmul": "a",
          "relu_fwd": "x", "relu_bwd": "dy"}


def _gpu():
    from . import _cuda
    return _cuda


# ---------------------------------------------------------------- argument checks

def _array(op, name, a, ndim=None, dtype=None):
    """Check that `a` is a C-contiguous float32/float64 numpy array (of `dtype`, with `ndim` dims)."""
    if not isinstance(a, np.ndarray):
        if _on_device(a):
            first = _FIRST.get(op, "the first array")
            raise TypeError(f"{op}: mixed devices: {name} is a cupy.ndarray (GPU) but {first} is a numpy.ndarray "
                            f"(CPU); put every array on one device (cupy.asarray(...) or .get())")
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    return _check_layout(op, name, a, ndim, dtype, "numpy")


def _check_layout(op, name, a, ndim, dtype, lib):
    """dtype (float32/float64, or exactly `dtype`), rank and C-contiguity of a numpy or CuPy array."""
    if dtype is None:
        if a.dtype not in _FLOATS:
            raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype}")
    elif a.dtype != dtype:
        raise TypeError(f"{op}: {name} must have dtype {np.dtype(dtype)} (no silent casts), got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (no silent copies are made; "
                         f"use {lib}.ascontiguousarray), got strides {a.strides}")
    return a


def _out(op, name, out, shape, dtype, inputs=(), in_place=()):
    """Check a caller-supplied output array, or allocate one. `inputs` and `in_place`: see _no_alias."""
    if out is None:
        return _empty(op, name, shape, dtype)
    _array(op, name, out, dtype=dtype)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if not out.flags.writeable:
        raise ValueError(f"{op}: {name} must be writable, got a read-only array")
    _no_alias(op, name, out, inputs, in_place)
    return out


def _span(a):
    """The byte range [start, end) of a C-contiguous numpy or CuPy array."""
    start = (a.__cuda_array_interface__ if _on_device(a) else a.__array_interface__)["data"][0]
    return start, start + a.nbytes


def _no_alias(op, name, out, inputs, in_place=()):
    """Refuse an output that shares memory with an input: the kernels read their inputs while they write
    the output (and a GEMM reads each input many times), so an overlap gives wrong values.

    inputs: (name, array or None) pairs. in_place: names of inputs of an elementwise op, which `out` may be
    exactly (the same buffer: same start and size, so element i is read before it is written), never partly.
    All arrays are C-contiguous (checked before), so their memory is exactly their byte range.
    """
    o0, o1 = _span(out)
    for in_name, a in inputs:
        if a is None or a.nbytes == 0 or out.nbytes == 0:
            continue
        a0, a1 = _span(a)
        if o0 < a1 and a0 < o1:
            if in_name in in_place and (o0, o1) == (a0, a1):
                continue
            how = (f"; {name} may be {in_name} itself (in place), but must not partly overlap it"
                   if in_name in in_place else "")
            raise ValueError(f"{op}: {name} must not share memory with {in_name} (the kernel reads {in_name} "
                             f"while it writes {name}; pass a separate array){how}")


def _empty(op, name, shape, dtype):
    """np.empty, but a shape whose byte size cannot be addressed raises naming the op (numpy's own
    check ignores zero dimensions, as this one does, and names nothing)."""
    nbytes = math.prod(int(d) for d in shape if d) * np.dtype(dtype).itemsize
    if nbytes >= 2**63:
        raise ValueError(f"{op}: {name} would have shape {tuple(shape)}, too large to address "
                         f"({nbytes} bytes >= 2**63)")
    return np.empty(shape, dtype=dtype)


def _pair(op, name, v, minimum):
    """An int or a pair of ints (height, width), each >= minimum."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair (h, w), got {tuple(v)}")
        pair = tuple(_int(op, name, e) for e in v)
    else:
        pair = (_int(op, name, v),) * 2
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {pair if pair[0] != pair[1] else pair[0]}")
    if max(pair) >= _MAX_DIM:
        raise ValueError(f"{op}: {name} must be < 2**62, got {pair}")
    return pair


def _shape4(op, name, shape):
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"{op}: {name} must be a 4-tuple (N, C, H, W), got {shape!r}")
    out = tuple(_int(op, name, d, minimum=0) for d in shape)
    if max(out) >= _MAX_DIM:
        raise ValueError(f"{op}: {name} dimensions must be < 2**62, got {out}")
    # Python ints do not overflow, so this catches products that would wrap in int64 before C++ sees them.
    if math.prod(out) >= 2**63 // 8:
        raise ValueError(f"{op}: {name} {out} has {math.prod(out)} elements, too many to address "
                         f"(the byte size must fit int64)")
    return out


def _conv_shape(op, x_shape, w_shape, s, p, d, g):
    """_C.conv2d_out_shape, its errors re-labelled with the calling op (C++ names them 'conv2d').

    The window and padded-input extents are checked here first, in Python's unbounded ints: near 2**63
    they would wrap in int64 (dilation * (R - 1) + 1, H + 2 * padding).
    """
    (H, W), (R, S) = tuple(x_shape[2:]), tuple(w_shape[2:])
    if min(H, W, R, S) >= 1:
        eff = (d[0] * (R - 1) + 1, d[1] * (S - 1) + 1)
        span = (H + 2 * p[0], W + 2 * p[1])
        if max(span) >= 2**63:
            raise ValueError(f"{op}: the padded input {span} must be < 2**63 (padding {p}), got input {(H, W)}")
        if eff[0] > span[0] or eff[1] > span[1]:
            raise ValueError(f"{op}: kernel {eff} with dilation is larger than the padded input {span}")
    try:
        return tuple(_C.conv2d_out_shape(x_shape, w_shape, s, p, d, g))
    except ValueError as e:
        msg = str(e)
        raise ValueError(f"{op}: {msg[len('conv2d: '):] if msg.startswith('conv2d: ') else msg}") from None


def _same_dtype(op, a_name, a, b_name, b):
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: {b_name} must have the dtype of {a_name} ({a.dtype}; no silent casts), got {b.dtype}")


def _conv_hparams(op, stride, padding, dilation, groups):
    return (_pair(op, "stride", stride, 1), _pair(op, "padding", padding, 0),
            _pair(op, "dilation", dilation, 1), _int(op, "groups", groups, minimum=1))


# ---------------------------------------------------------------- conv2d

def conv2d_out_shape(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    """Output shape (N, K, P, Q) of a convolution; raises ValueError for an impossible one."""
    op = "conv2d"
    s, p, d, g = _conv_hparams(op, stride, padding, dilation, groups)
    return _conv_shape(op, _shape4(op, "x_shape", x_shape), _shape4(op, "w_shape", w_shape), s, p, d, g)


def conv2d_fwd(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, out=None):
    """y = conv2d(x, w) + b, as ``torch.nn.functional.conv2d``.

    x (N, C, H, W), w (K, C/groups, R, S), b (K,) or None -> y (N, K, P, Q), written into `out` if given
    (`out` must not share memory with x, w or b).
    """
    if not isinstance(x, np.ndarray) and _on_device(x):
        return _gpu().conv2d_fwd(x, w, b, stride, padding, dilation, groups, out)
    op = "conv2d_fwd"
    _array(op, "x", x, ndim=4)
    _array(op, "w", w, ndim=4)
    _same_dtype(op, "x", x, "w", w)
    if b is not None:
        _array(op, "b", b, ndim=1, dtype=x.dtype)
    s, p, d, g = _conv_hparams(op, stride, padding, dilation, groups)
    shape = _conv_shape(op, x.shape, w.shape, s, p, d, g)
    y = _out(op, "out", out, shape, x.dtype, inputs=(("x", x), ("w", w), ("b", b)))
    _C.conv2d_fwd(x, w, b, y, s, p, d, g)
    return y


def conv2d_bwd_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1, out=None):
    """dx, the gradient of conv2d with respect to its input x of shape `x_shape`. Written (=) into `out`,
    which must not share memory with dy or w."""
    if not isinstance(dy, np.ndarray) and _on_device(dy):
        return _gpu().conv2d_bwd_data(dy, w, x_shape, stride, padding, dilation, groups, out)
    op = "conv2d_bwd_data"
    _array(op, "dy", dy, ndim=4)
    _array(op, "w", w, ndim=4)
    _same_dtype(op, "dy", dy, "w", w)
    x_shape = _shape4(op, "x_shape", x_shape)
    s, p, d, g = _conv_hparams(op, stride, padding, dilation, groups)
    want = _conv_shape(op, x_shape, w.shape, s, p, d, g)
    if tuple(dy.shape) != want:
        raise ValueError(f"{op}: dy must have shape {want} for x_shape {x_shape} and w {tuple(w.shape)}, "
                         f"got {tuple(dy.shape)}")
    dx = _out(op, "out", out, x_shape, dy.dtype, inputs=(("dy", dy), ("w", w)))
    _C.conv2d_bwd_data(dy, w, dx, s, p, d, g)
    return dx


def conv2d_bwd_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1, out=None, accumulate=False):
    """dw, the gradient of conv2d with respect to its weight of shape `w_shape`.

    With ``accumulate=True`` the result is added (+=) into `out`, as parameter gradients accumulate.
    `out` must not share memory with dy or x.
    """
    if not isinstance(dy, np.ndarray) and _on_device(dy):
        return _gpu().conv2d_bwd_weight(dy, x, w_shape, stride, padding, dilation, groups, out, accumulate)
    op = "conv2d_bwd_weight"
    accumulate = _flag(op, "accumulate", accumulate)
    _array(op, "dy", dy, ndim=4)
    _array(op, "x", x, ndim=4)
    _same_dtype(op, "dy", dy, "x", x)
    w_shape = _shape4(op, "w_shape", w_shape)
    s, p, d, g = _conv_hparams(op, stride, padding, dilation, groups)
    want = _conv_shape(op, x.shape, w_shape, s, p, d, g)
    if tuple(dy.shape) != want:
        raise ValueError(f"{op}: dy must have shape {want} for x {tuple(x.shape)} and w_shape {w_shape}, "
                         f"got {tuple(dy.shape)}")
    if accumulate and out is None:
        raise ValueError(f"{op}: accumulate=True needs out= (the gradient to add into)")
    dw = _out(op, "out", out, w_shape, dy.dtype, inputs=(("dy", dy), ("x", x)))
    _C.conv2d_bwd_weight(dy, x, dw, s, p, d, g, accumulate)
    return dw


def conv2d_bwd_bias(dy, out=None, accumulate=False):
    """db[k] = sum of dy[:, k] over the batch and the plane (the bias gradient); `out` must not share memory
    with dy."""
    if not isinstance(dy, np.ndarray) and _on_device(dy):
        return _gpu().conv2d_bwd_bias(dy, out, accumulate)
    op = "conv2d_bwd_bias"
    _array(op, "dy", dy, ndim=4)
    accumulate = _flag(op, "accumulate", accumulate)
    if accumulate and out is None:
        raise ValueError(f"{op}: accumulate=True needs out= (the gradient to add into)")
    db = _out(op, "out", out, (dy.shape[1],), dy.dtype, inputs=(("dy", dy),))
    _C.conv2d_bwd_bias(dy, db, accumulate)
    return db


# ---------------------------------------------------------------- maxpool2d

def maxpool2d_fwd(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max-pooling with argmax, as ``F.max_pool2d(..., return_indices=True)``.

    Returns (y, indices): indices are int64, flat within each (n, c) plane (ih * W + iw). Padding is
    -inf and at most kernel_size/2; ties go to the first maximum in row-major order; NaN propagates.
    """
    if not isinstance(x, np.ndarray) and _on_device(x):
        return _gpu().maxpool2d_fwd(x, kernel_size, stride, padding, dilation, ceil_mode)
    op = "maxpool2d_fwd"
    _array(op, "x", x, ndim=4)
    k = _pair(op, "kernel_size", kernel_size, 1)
    s = k if stride is None else _pair(op, "stride", stride, 1)
    p = _pair(op, "padding", padding, 0)
    d = _pair(op, "dilation", dilation, 1)
    ceil_mode = _flag(op, "ceil_mode", ceil_mode)
    shape = _C.maxpool2d_out_shape(x.shape, k, s, p, d, ceil_mode)
    y = _empty(op, "y", shape, x.dtype)
    indices = _empty(op, "indices", shape, np.int64)
    _C.maxpool2d_fwd(x, y, indices, k, s, p, d, ceil_mode)
    return y, indices


def maxpool2d_bwd(dy, indices, x_shape):
    """dx: dy scattered through the argmax `indices`, accumulating where windows overlap."""
    if not isinstance(dy, np.ndarray) and _on_device(dy):
        return _gpu().maxpool2d_bwd(dy, indices, x_shape)
    op = "maxpool2d_bwd"
    _array(op, "dy", dy, ndim=4)
    _array(op, "indices", indices, ndim=4, dtype=np.int64)
    x_shape = _shape4(op, "x_shape", x_shape)
    if tuple(indices.shape) != tuple(dy.shape):
        raise ValueError(f"{op}: indices must have the shape of dy {tuple(dy.shape)}, got {tuple(indices.shape)}")
    if tuple(dy.shape[:2]) != x_shape[:2]:
        raise ValueError(f"{op}: dy (N, C) = {tuple(dy.shape[:2])} must match x_shape (N, C) = {x_shape[:2]}")
    dx = _empty(op, "dx", x_shape, dy.dtype)
    _C.maxpool2d_bwd(dy, indices, dx)
    return dx


# ---------------------------------------------------------------- dropout

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
    if not isinstance(x, np.ndarray) and _on_device(x):
        return _gpu().dropout_fwd(x, p, seed, offset)
    op = "dropout_fwd"
    _array(op, "x", x)
    p = _prob(op, p)
    seed = _int(op, "seed", seed, minimum=0)
    offset = _int(op, "offset", offset, minimum=0)
    if seed >= 2**64 or offset >= 2**64:
        raise ValueError(f"{op}: seed and offset must be < 2**64, got seed={seed}, offset={offset}")
    y = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.uint8)
    _C.dropout_fwd(x, y, mask, p, seed, offset)
    return y, mask


def dropout_bwd(dy, mask, p):
    """dx = dy * mask / (1 - p)."""
    if not isinstance(dy, np.ndarray) and _on_device(dy):
        return _gpu().dropout_bwd(dy, mask, p)
    op = "dropout_bwd"
    _array(op, "dy", dy)
    _array(op, "mask", mask, dtype=np.uint8)
    p = _prob(op, p)
    if tuple(mask.shape) != tuple(dy.shape):
        raise ValueError(f"{op}: mask must have the shape of dy {tuple(dy.shape)}, got {tuple(mask.shape)}")
    dx = np.empty_like(dy)
    _C.dropout_bwd(dy, mask, dx, p)
    return dx


# ---------------------------------------------------------------- matmul

def _matmul_flags(op, trans_a, trans_b, accumulate):
    return _flag(op, "trans_a", trans_a), _flag(op, "trans_b", trans_b), _flag(op, "accumulate", accumulate)


def _matmul_shape(op, a, b, trans_a, trans_b, out, accumulate):
    """(M, N) of op(a) @ op(b) for 2-D a and b of one dtype; the checks both devices make (the flags were
    checked by _matmul_flags)."""
    _same_dtype(op, "a", a, "b", b)
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if K != Kb:
        raise ValueError(f"{op}: inner dimensions differ: op(a) is {(M, K)}, op(b) is {(Kb, N)}")
    if accumulate and out is None:
        raise ValueError(f"{op}: accumulate=True needs out= (the array to add into)")
    return M, N


def matmul(a, b, trans_a=False, trans_b=False, out=None, accumulate=False):
    """out = op(a) @ op(b) on cnnkit's threads, where op transposes when trans_a / trans_b is set.

    a, b are 2-D C-contiguous arrays of one float dtype. With ``accumulate=True`` the product is added
    (+=) into `out`, as parameter gradients accumulate. Linear layers use this rather than numpy's
    matmul so that a training step never wakes numpy's own BLAS thread pool. `out` must not share memory
    with a or b.
    """
    if not isinstance(a, np.ndarray) and _on_device(a):
        return _gpu().matmul(a, b, trans_a, trans_b, out, accumulate)
    op = "matmul"
    _array(op, "a", a, ndim=2)
    _array(op, "b", b, ndim=2)
    trans_a, trans_b, accumulate = _matmul_flags(op, trans_a, trans_b, accumulate)
    M, N = _matmul_shape(op, a, b, trans_a, trans_b, out, accumulate)
    c = _out(op, "out", out, (M, N), a.dtype, inputs=(("a", a), ("b", b)))
    _C.matmul(a, b, c, trans_a, trans_b, accumulate)
    return c


# ---------------------------------------------------------------- batchnorm

def _ncs_array(op, name, x):
    _array(op, name, x)
    if not 2 <= x.ndim <= 4:
        raise ValueError(f"{op}: {name} must be 2-D, 3-D or 4-D (N, C, ...), got shape {tuple(x.shape)}")
    return x


def batchnorm_stats(x):
    """Per-channel (mean, biased variance) of x (N, C, ...), accumulated in float64, returned in x's dtype."""
    op = "batchnorm_stats"
    _ncs_array(op, "x", x)
    mean = np.empty(x.shape[1], x.dtype)
    var = np.empty(x.shape[1], x.dtype)
    _C.batchnorm_stats(x, mean, var)
    return mean, var


def channel_affine(x, alpha, beta, out=None):
    """y[:, c] = x[:, c] * alpha[c] + beta[c] for x (N, C, ...): BatchNorm's output transform.
    Pass out=x to work in place; `out` must not otherwise share memory with x, alpha or beta."""
    op = "channel_affine"
    _ncs_array(op, "x", x)
    _array(op, "alpha", alpha, ndim=1, dtype=x.dtype)
    _array(op, "beta", beta, ndim=1, dtype=x.dtype)
    y = _out(op, "out", out, x.shape, x.dtype, inputs=(("x", x), ("alpha", alpha), ("beta", beta)),
             in_place=("x",))
    _C.channel_affine(x, alpha, beta, y)
    return y


def batchnorm_bwd(dy, x, mean, invstd, weight=None, train=True, need_dx=True):
    """Backward of y = (x - mean) * invstd * weight + bias. -> (dx or None, sum(dy), sum((x - mean) * dy)),
    the sums per channel in float64 (the bias gradient is the first, the weight gradient the second times
    invstd). With train=True, mean and invstd are the batch statistics of x and depend on it."""
    op = "batchnorm_bwd"
    _ncs_array(op, "x", x)
    train, need_dx = _flag(op, "train", train), _flag(op, "need_dx", need_dx)
    _array(op, "dy", dy, dtype=x.dtype)
    for name, a in (("mean", mean), ("invstd", invstd)) + ((("weight", weight),) if weight is not None else ()):
        _array(op, name, a, ndim=1, dtype=x.dtype)
    dx = np.empty_like(x) if need_dx else None
    sum_dy = np.empty(x.shape[1], np.float64)
    dotp = np.empty(x.shape[1], np.float64)
    _C.batchnorm_bwd(dy, x, mean, invstd, weight, train, dx, sum_dy, dotp)
    return dx, sum_dy, dotp


# ---------------------------------------------------------------- relu

def relu_fwd(x, out=None):
    """y = max(x, 0) (NaN propagates). Pass out=x to work in place (no other overlap with x is allowed)."""
    if not isinstance(x, np.ndarray) and _on_device(x):
        return _gpu().relu_fwd(x, out)
    op = "relu_fwd"
    _array(op, "x", x)
    y = _out(op, "out", out, x.shape, x.dtype, inputs=(("x", x),), in_place=("x",))
    _C.relu_fwd(x, y)
    return y


def relu_bwd(dy, y, out=None):
    """dx = dy where y > 0 (or y is NaN), else 0; `y` is the forward output. Pass out=dy (or out=y) to work
    in place; no partial overlap with either is allowed."""
    if not isinstance(dy, np.ndarray) and _on_device(dy):
        return _gpu().relu_bwd(dy, y, out)
    op = "relu_bwd"
    _array(op, "dy", dy)
    _array(op, "y", y, dtype=dy.dtype)
    if tuple(y.shape) != tuple(dy.shape):
        raise ValueError(f"{op}: y must have the shape of dy {tuple(dy.shape)}, got {tuple(y.shape)}")
    dx = _out(op, "out", out, dy.shape, dy.dtype, inputs=(("dy", dy), ("y", y)), in_place=("dy", "y"))
    _C.relu_bwd(dy, y, dx)
    return dx


__all__ = ["conv2d_out_shape", "conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_weight", "conv2d_bwd_bias",
           "maxpool2d_fwd", "maxpool2d_bwd", "dropout_fwd", "dropout_bwd", "matmul",
           "batchnorm_stats", "channel_affine", "batchnorm_bwd", "relu_fwd", "relu_bwd"]
