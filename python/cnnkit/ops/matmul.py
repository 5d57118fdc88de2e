"""matmul: out = op(a) @ op(b) with optional transposes and accumulation."""
from .._validate import check_array, check_flag as _flag, check_out, check_same_dtype, first_array
from . import _backend


def _matmul_flags(op, trans_a, trans_b, accumulate):
    return _flag(op, "trans_a", trans_a), _flag(op, "trans_b", trans_b), _flag(op, "accumulate", accumulate)


def _matmul_shape(op, a, b, trans_a, trans_b, out, accumulate):
    """(M, N) of op(a) @ op(b) for 2-D a and b of one dtype (the flags were checked by _matmul_flags)."""
    check_same_dtype(op, "a", a, "b", b)
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
    with a or b. On a GPU the product is ``cupy.matmul`` (cuBLAS).
    """
    op = "matmul"
    ref = first_array(op, "a", a, ndim=2)
    check_array(op, "b", b, ref, ndim=2)
    trans_a, trans_b, accumulate = _matmul_flags(op, trans_a, trans_b, accumulate)
    M, N = _matmul_shape(op, a, b, trans_a, trans_b, out, accumulate)
    c = check_out(op, "out", out, (M, N), a.dtype, ref, inputs=(("a", a), ("b", b)))
    _backend.kernels(a).matmul(a, b, c, trans_a, trans_b, accumulate)
    return c
