"""conv2d: the output shape, the forward pass and the three gradients (data, weight, bias).

CPU algorithms (``algorithm=`` on the three passes, ``set_conv_algorithm`` for the process-wide default):
"gemm" is im2col + GEMM and does every convolution; "winograd" is Winograd F(4x4, 3x3) (Lavin & Gray
2016) for 3x3 kernels with stride 1 and dilation 1: 4x fewer multiplications, a float32 error of about
1e-6 relative instead of 3e-8 (docs/kernels.md). "auto" (the default) takes winograd for those kernels when
the group has at least 16 input and 16 output channels, else gemm. CuPy arrays always run the CUDA
implicit-GEMM kernels.
"""
from .. import _C
from .._validate import (check_array, check_choice, check_flag as _flag, check_int as _int, check_out,
                         check_pair as _pair, check_same_dtype, check_shape4, first_array)
from . import _backend


ALGORITHMS = ("auto", "gemm", "winograd")
_algorithm = "auto"
# "auto" takes winograd from this many channels per group, in and out, and with at least
# max(_AUTO_MIN_TILES, C/2) 4x4 output tiles in the batch (measured: docs/kernels.md). With few tiles the
# per-call filter transform and thin GEMMs cost more than the multiplications saved (ResNet-18's 4x4 planes
# at batch 16: 16 tiles for 512 channels ran at 0.3-0.4x of gemm).
_AUTO_MIN_CHANNELS = 16
_AUTO_MIN_TILES = 64


def check_algorithm(op, name, value, none_ok=True):
    """A conv algorithm argument: one of ALGORITHMS (or None where none_ok)."""
    return check_choice(op, name, value, ALGORITHMS, none_ok)


def set_conv_algorithm(algorithm):
    """Set the process-wide CPU conv2d algorithm: "auto" (default), "gemm" or "winograd".

    It applies to every ``ops.conv2d_*`` pass (and so every Conv2d layer) called with ``algorithm=None``.
    "winograd" here means Winograd wherever it applies (3x3 kernel, stride 1, dilation 1), gemm elsewhere;
    an explicit ``algorithm="winograd"`` on a call or a layer instead refuses other shapes (ValueError).
    Arrays on a GPU ignore it (the CUDA kernels are implicit GEMM).
    """
    global _algorithm
    _algorithm = check_algorithm("set_conv_algorithm", "algorithm", algorithm, none_ok=False)


def get_conv_algorithm():
    """The process-wide CPU conv2d algorithm set by set_conv_algorithm ("auto" by default)."""
    return _algorithm


def winograd_applies(w_shape, stride, dilation):
    """Whether the Winograd kernels can run a conv of this weight shape, stride and dilation pair."""
    return tuple(w_shape[2:]) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)


def _pick(op, algorithm, ref, w_shape, s, d, g, out_shape):
    """The _C algorithm of one pass ("gemm" or "winograd"), or None on a GPU (its kernels take none).

    An explicit "winograd" is passed on as is, so that _C refuses a shape it cannot do (ValueError naming
    the reason); "auto" and the global setting fall back to gemm for such shapes.
    """
    if ref.gpu is not None:
        if algorithm == "winograd":
            raise ValueError(f"{op}: algorithm 'winograd' is CPU-only; CuPy arrays run the CUDA implicit-GEMM "
                             f"kernels (pass algorithm=None, 'auto' or 'gemm')")
        return None
    if algorithm is None:
        algorithm = _algorithm
        if algorithm == "winograd":
            return "winograd" if winograd_applies(w_shape, s, d) else "gemm"
    if algorithm != "auto":
        return algorithm
    K, Cg = w_shape[0], w_shape[1]
    N, _, P, Q = out_shape
    tiles = N * (-(-P // 4)) * (-(-Q // 4))
    wide = Cg >= _AUTO_MIN_CHANNELS and K // g >= _AUTO_MIN_CHANNELS
    many = tiles >= max(_AUTO_MIN_TILES, Cg // 2)
    return "winograd" if wide and many and winograd_applies(w_shape, s, d) else "gemm"


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


def _conv_hparams(op, stride, padding, dilation, groups):
    return (_pair(op, "stride", stride, 1), _pair(op, "padding", padding, 0),
            _pair(op, "dilation", dilation, 1), _int(op, "groups", groups, minimum=1))


def conv2d_out_shape(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    """Output shape (N, K, P, Q) of a convolution; raises ValueError for an impossible one."""
    op = "conv2d"
    s, p, d, g = _conv_hparams(op, stride, padding, dilation, groups)
    return _conv_shape(op, check_shape4(op, "x_shape", x_shape), check_shape4(op, "w_shape", w_shape), s, p, d, g)


def _call(ref, alg, name, *args):
    """kernels(ref).name(*args), with the algorithm appended for the CPU."""
    k = _backend.kernels(ref)
    return getattr(k, name)(*args) if alg is None else getattr(k, name)(*args, alg)


def conv2d_fwd(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, out=None, algorithm=None, relu=False):
    """y = conv2d(x, w) + b, as ``torch.nn.functional.conv2d``; with ``relu=True``, max(y, 0) applied in the
    same pass (the fused Conv2d + ReLU epilogue: bit for bit ``relu_fwd(conv2d_fwd(...))``).

    x (N, C, H, W), w (K, C/groups, R, S), b (K,) or None -> y (N, K, P, Q), written into `out` if given
    (`out` must not share memory with x, w or b). `algorithm`: "auto", "gemm", "winograd" or None (the
    set_conv_algorithm setting); see the module docstring.
    """
    op = "conv2d_fwd"
    algorithm = check_algorithm(op, "algorithm", algorithm)
    relu = _flag(op, "relu", relu)
    ref = first_array(op, "x", x, ndim=4)
    check_array(op, "w", w, ref, ndim=4)
    check_same_dtype(op, "x", x, "w", w)
    if b is not None:
        check_array(op, "b", b, ref, ndim=1, dtype=x.dtype)
    s, p, d, g = _conv_hparams(op, stride, padding, dilation, groups)
    shape = _conv_shape(op, x.shape, w.shape, s, p, d, g)
    if b is not None and b.shape[0] != w.shape[0]:
        raise ValueError(f"{op}: b must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    y = check_out(op, "out", out, shape, x.dtype, ref, inputs=(("x", x), ("w", w), ("b", b)))
    alg = _pick(op, algorithm, ref, w.shape, s, d, g, shape)
    k = _backend.kernels(x)
    if alg is not None:  # the CPU: _C takes the algorithm and fuses the ReLU
        k.conv2d_fwd(x, w, b, y, s, p, d, g, alg, relu)
    else:  # the CUDA kernels have no fused epilogue: ReLU in place after
        k.conv2d_fwd(x, w, b, y, s, p, d, g)
        if relu:
            k.relu_fwd(y, y)
    return y


def conv2d_bwd_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1, out=None, algorithm=None):
    """dx, the gradient of conv2d with respect to its input x of shape `x_shape`. Written (=) into `out`,
    which must not share memory with dy or w. `algorithm` as for conv2d_fwd."""
    op = "conv2d_bwd_data"
    algorithm = check_algorithm(op, "algorithm", algorithm)
    ref = first_array(op, "dy", dy, ndim=4)
    check_array(op, "w", w, ref, ndim=4)
    check_same_dtype(op, "dy", dy, "w", w)
    x_shape = check_shape4(op, "x_shape", x_shape)
    s, p, d, g = _conv_hparams(op, stride, padding, dilation, groups)
    want = _conv_shape(op, x_shape, w.shape, s, p, d, g)
    if tuple(dy.shape) != want:
        raise ValueError(f"{op}: dy must have shape {want} for x_shape {x_shape} and w {tuple(w.shape)}, "
                         f"got {tuple(dy.shape)}")
    dx = check_out(op, "out", out, x_shape, dy.dtype, ref, inputs=(("dy", dy), ("w", w)))
    _call(dy, _pick(op, algorithm, ref, w.shape, s, d, g, dy.shape), "conv2d_bwd_data", dy, w, dx, s, p, d, g)
    return dx


def conv2d_bwd_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1, out=None, accumulate=False,
                      algorithm=None):
    """dw, the gradient of conv2d with respect to its weight of shape `w_shape`.

    With ``accumulate=True`` the result is added (+=) into `out`, as parameter gradients accumulate.
    `out` must not share memory with dy or x. `algorithm` as for conv2d_fwd.
    """
    op = "conv2d_bwd_weight"
    algorithm = check_algorithm(op, "algorithm", algorithm)
    ref = first_array(op, "dy", dy, ndim=4)
    accumulate = _flag(op, "accumulate", accumulate)
    check_array(op, "x", x, ref, ndim=4)
    check_same_dtype(op, "dy", dy, "x", x)
    w_shape = check_shape4(op, "w_shape", w_shape)
    s, p, d, g = _conv_hparams(op, stride, padding, dilation, groups)
    want = _conv_shape(op, x.shape, w_shape, s, p, d, g)
    if tuple(dy.shape) != want:
        raise ValueError(f"{op}: dy must have shape {want} for x {tuple(x.shape)} and w_shape {w_shape}, "
                         f"got {tuple(dy.shape)}")
    if accumulate and out is None:
        raise ValueError(f"{op}: accumulate=True needs out= (the gradient to add into)")
    dw = check_out(op, "out", out, w_shape, dy.dtype, ref, inputs=(("dy", dy), ("x", x)))
    alg = _pick(op, algorithm, ref, w_shape, s, d, g, dy.shape)
    _call(dy, alg, "conv2d_bwd_weight", dy, x, dw, s, p, d, g, accumulate)
    return dw


def conv2d_bwd_bias(dy, out=None, accumulate=False):
    """db[k] = sum of dy[:, k] over the batch and the plane (the bias gradient); `out` must not share memory
    with dy."""
    op = "conv2d_bwd_bias"
    ref = first_array(op, "dy", dy, ndim=4)
    accumulate = _flag(op, "accumulate", accumulate)
    if accumulate and out is None:
        raise ValueError(f"{op}: accumulate=True needs out= (the gradient to add into)")
    db = check_out(op, "out", out, (dy.shape[1],), dy.dtype, ref, inputs=(("dy", dy),))
    _backend.kernels(dy).conv2d_bwd_bias(dy, db, accumulate)
    return db
