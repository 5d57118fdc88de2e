"""The GPU face of ``cnnkit.ops``: the same ops, checks and messages for CuPy arrays.

Each function validates its CuPy arguments (float32 or float64, C-contiguous, one device, the shapes the CPU
path accepts), allocates outputs with CuPy on the arrays' device, and passes integer device pointers, the
dtype code and CuPy's current stream to a ``cnnkit._C.*_cuda`` binding, which re-validates the shapes in C++
and queues the kernel. Nothing here synchronises or copies to the host, except ``grad_sumsq``, which returns
Python numbers (use ``grad_sumsq_device`` to keep them on the GPU; the optimizer keeps them in its device
control block, read by the step kernels themselves).

``cnnkit.ops`` routes here when an op's first array is a CuPy array; the optimizer-step functions at the end
mirror the ``cnnkit._C`` CPU bindings' signatures, so a caller can pick ``_C`` or this module by device.
Matrix products use ``cupy.matmul`` (cuBLAS through CuPy) rather than a cnnkit kernel.

Status: written and compiled without a GPU; none of this has run on a device yet (tests/test_cuda_ops.py).
"""
import numpy as np

from .. import _C, cuda
from .. import ops as _ops
from .._validate import check_flag as _flag

_DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}


def _cupy():
    import cupy
    return cupy


def _is_device(a):
    return type(a).__module__.startswith("cupy")


def _darray(op, name, a, ref, device, ndim=None, dtype=None):
    """Check that `a` is a C-contiguous CuPy array of a float dtype (or `dtype`) on GPU `device`.

    `ref` names the op's first array (the one that chose the GPU), for the mixed-device message.
    """
    if not _is_device(a):
        if isinstance(a, np.ndarray):
            raise TypeError(f"{op}: mixed devices: {ref} is a cupy.ndarray (GPU) but {name} is a numpy.ndarray "
                            f"(CPU); put every array on one device (cupy.asarray(...) or .get())")
        raise TypeError(f"{op}: {name} must be a cupy.ndarray (as {ref} is), got {type(a).__name__}")
    _ops._check_layout(op, name, a, ndim, dtype, "cupy")
    # A C-contiguous view may still start off its element size; the kernels would read it as T*.
    addr, size = a.__cuda_array_interface__["data"][0], a.dtype.itemsize
    if addr % size:
        raise ValueError(f"{op}: {name} must be aligned to {size} bytes ({a.dtype}), got a device address "
                         f"{addr % size} byte(s) past a multiple of {size} (no silent copies are made; pass a "
                         f"copy, e.g. cupy.array({name}))")
    if a.device.id != device:
        raise ValueError(f"{op}: {name} is on GPU {a.device.id} but {ref} is on GPU {device}; "
                         f"every array must be on one device")
    return a


def _first(op, name, a, ndim=None, dtype=None):
    """Validate the op's first array and make sure CUDA is usable; returns its device id."""
    cuda.require(op)
    dev = a.device.id
    _darray(op, name, a, name, dev, ndim=ndim, dtype=dtype)
    return dev


def _dout(op, name, out, shape, dtype, ref, device, inputs=(), in_place=()):
    """Check a caller-supplied CuPy output, or allocate one on `device` (the caller has entered it).
    `inputs` and `in_place`: see cnnkit.ops._no_alias."""
    if out is None:
        return _cupy().empty(shape, dtype=dtype)
    _darray(op, name, out, ref, device, dtype=dtype)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    _ops._no_alias(op, name, out, inputs, in_place)
    return out


def _ptr(a):
    """The device pointer of a CuPy array (0 for None), from ``__cuda_array_interface__`` (the layout was
    checked before: C-contiguous, so the pointer and the shape say everything)."""
    return 0 if a is None else a.__cuda_array_interface__["data"][0]


def _stream():
    return _cupy().cuda.get_current_stream().ptr


def _code(a):
    return _DTYPE_CODE[np.dtype(a.dtype)]


# ---------------------------------------------------------------- conv2d
# The three GEMM passes take cnnkit.cuda.get_tf32() at call time (float32 only; float64 ignores it).

def conv2d_fwd(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, out=None):
    op = "conv2d_fwd"
    dev = _first(op, "x", x, ndim=4)
    _darray(op, "w", w, "x", dev, ndim=4)
    _ops._same_dtype(op, "x", x, "w", w)
    if b is not None:
        _darray(op, "b", b, "x", dev, ndim=1, dtype=x.dtype)
    s, p, d, g = _ops._conv_hparams(op, stride, padding, dilation, groups)
    shape = _ops._conv_shape(op, x.shape, w.shape, s, p, d, g)
    if b is not None and b.shape[0] != w.shape[0]:
        raise ValueError(f"{op}: b must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    with _cupy().cuda.Device(dev):
        y = _dout(op, "out", out, shape, x.dtype, "x", dev, inputs=(("x", x), ("w", w), ("b", b)))
        _C.conv2d_fwd_cuda(_ptr(x), _ptr(w), _ptr(b), _ptr(y), list(x.shape), list(w.shape), s, p, d, g,
                           _code(x), _stream(), cuda.get_tf32())
    return y


def conv2d_bwd_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1, out=None):
    op = "conv2d_bwd_data"
    dev = _first(op, "dy", dy, ndim=4)
    _darray(op, "w", w, "dy", dev, ndim=4)
    _ops._same_dtype(op, "dy", dy, "w", w)
    x_shape = _ops._shape4(op, "x_shape", x_shape)
    s, p, d, g = _ops._conv_hparams(op, stride, padding, dilation, groups)
    want = _ops._conv_shape(op, x_shape, w.shape, s, p, d, g)
    if tuple(dy.shape) != want:
        raise ValueError(f"{op}: dy must have shape {want} for x_shape {x_shape} and w {tuple(w.shape)}, "
                         f"got {tuple(dy.shape)}")
    with _cupy().cuda.Device(dev):
        dx = _dout(op, "out", out, x_shape, dy.dtype, "dy", dev, inputs=(("dy", dy), ("w", w)))
        _C.conv2d_bwd_data_cuda(_ptr(dy), _ptr(w), _ptr(dx), list(x_shape), list(w.shape), s, p, d, g,
                                _code(dy), _stream(), cuda.get_tf32())
    return dx


def conv2d_bwd_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1, out=None, accumulate=False):
    op = "conv2d_bwd_weight"
    dev = _first(op, "dy", dy, ndim=4)
    accumulate = _flag(op, "accumulate", accumulate)
    _darray(op, "x", x, "dy", dev, ndim=4)
    _ops._same_dtype(op, "dy", dy, "x", x)
    w_shape = _ops._shape4(op, "w_shape", w_shape)
    s, p, d, g = _ops._conv_hparams(op, stride, padding, dilation, groups)
    want = _ops._conv_shape(op, x.shape, w_shape, s, p, d, g)
    if tuple(dy.shape) != want:
        raise ValueError(f"{op}: dy must have shape {want} for x {tuple(x.shape)} and w_shape {w_shape}, "
                         f"got {tuple(dy.shape)}")
    if accumulate and out is None:
        raise ValueError(f"{op}: accumulate=True needs out= (the gradient to add into)")
    with _cupy().cuda.Device(dev):
        dw = _dout(op, "out", out, w_shape, dy.dtype, "dy", dev, inputs=(("dy", dy), ("x", x)))
        _C.conv2d_bwd_weight_cuda(_ptr(dy), _ptr(x), _ptr(dw), list(x.shape), list(w_shape), s, p, d, g,
                                  accumulate, _code(dy), _stream(), cuda.get_tf32())
    return dw


def conv2d_bwd_bias(dy, out=None, accumulate=False):
    op = "conv2d_bwd_bias"
    dev = _first(op, "dy", dy, ndim=4)
    accumulate = _flag(op, "accumulate", accumulate)
    if accumulate and out is None:
        raise ValueError(f"{op}: accumulate=True needs out= (the gradient to add into)")
    with _cupy().cuda.Device(dev):
        db = _dout(op, "out", out, (dy.shape[1],), dy.dtype, "dy", dev, inputs=(("dy", dy),))
        _C.conv2d_bwd_bias_cuda(_ptr(dy), _ptr(db), list(dy.shape), accumulate, _code(dy), _stream())
    return db


# ---------------------------------------------------------------- maxpool2d

def maxpool2d_fwd(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    op = "maxpool2d_fwd"
    dev = _first(op, "x", x, ndim=4)
    k = _ops._pair(op, "kernel_size", kernel_size, 1)
    s = k if stride is None else _ops._pair(op, "stride", stride, 1)
    p = _ops._pair(op, "padding", padding, 0)
    d = _ops._pair(op, "dilation", dilation, 1)
    ceil_mode = _flag(op, "ceil_mode", ceil_mode)
    shape = tuple(_C.maxpool2d_out_shape(x.shape, k, s, p, d, ceil_mode))
    cp = _cupy()
    with cp.cuda.Device(dev):
        y = cp.empty(shape, dtype=x.dtype)
        indices = cp.empty(shape, dtype=cp.int64)
        _C.maxpool2d_fwd_cuda(_ptr(x), _ptr(y), _ptr(indices), list(x.shape), k, s, p, d, ceil_mode,
                              _code(x), _stream())
    return y, indices


def maxpool2d_bwd(dy, indices, x_shape):
    """As the CPU op, except that an index outside its plane is skipped instead of raising (checking would
    need a host sync)."""
    op = "maxpool2d_bwd"
    dev = _first(op, "dy", dy, ndim=4)
    _darray(op, "indices", indices, "dy", dev, ndim=4, dtype=np.int64)
    x_shape = _ops._shape4(op, "x_shape", x_shape)
    if tuple(indices.shape) != tuple(dy.shape):
        raise ValueError(f"{op}: indices must have the shape of dy {tuple(dy.shape)}, got {tuple(indices.shape)}")
    if tuple(dy.shape[:2]) != x_shape[:2]:
        raise ValueError(f"{op}: dy (N, C) = {tuple(dy.shape[:2])} must match x_shape (N, C) = {x_shape[:2]}")
    cp = _cupy()
    with cp.cuda.Device(dev):
        dx = cp.empty(x_shape, dtype=dy.dtype)
        _C.maxpool2d_bwd_cuda(_ptr(dy), _ptr(indices), _ptr(dx), list(dy.shape), list(x_shape), _code(dy),
                              _stream())
    return dx


# ---------------------------------------------------------------- dropout

def dropout_fwd(x, p, seed, offset=0):
    op = "dropout_fwd"
    dev = _first(op, "x", x)
    p = _ops._prob(op, p)
    seed = _ops._int(op, "seed", seed, minimum=0)
    offset = _ops._int(op, "offset", offset, minimum=0)
    if seed >= 2**64 or offset >= 2**64:
        raise ValueError(f"{op}: seed and offset must be < 2**64, got seed={seed}, offset={offset}")
    cp = _cupy()
    with cp.cuda.Device(dev):
        y = cp.empty_like(x)
        mask = cp.empty(x.shape, dtype=cp.uint8)
        _C.dropout_fwd_cuda(_ptr(x), _ptr(y), _ptr(mask), x.size, p, seed, offset, _code(x), _stream())
    return y, mask


def dropout_bwd(dy, mask, p):
    op = "dropout_bwd"
    dev = _first(op, "dy", dy)
    _darray(op, "mask", mask, "dy", dev, dtype=np.uint8)
    p = _ops._prob(op, p)
    if tuple(mask.shape) != tuple(dy.shape):
        raise ValueError(f"{op}: mask must have the shape of dy {tuple(dy.shape)}, got {tuple(mask.shape)}")
    cp = _cupy()
    with cp.cuda.Device(dev):
        dx = cp.empty_like(dy)
        _C.dropout_bwd_cuda(_ptr(dy), _ptr(mask), _ptr(dx), dy.size, p, _code(dy), _stream())
    return dx


# ---------------------------------------------------------------- matmul (cupy.matmul, i.e. cuBLAS)

def matmul(a, b, trans_a=False, trans_b=False, out=None, accumulate=False):
    op = "matmul"
    dev = _first(op, "a", a, ndim=2)
    _darray(op, "b", b, "a", dev, ndim=2)
    trans_a, trans_b, accumulate = _ops._matmul_flags(op, trans_a, trans_b, accumulate)
    M, N = _ops._matmul_shape(op, a, b, trans_a, trans_b, out, accumulate)
    cp = _cupy()
    with cp.cuda.Device(dev):
        c = _dout(op, "out", out, (M, N), a.dtype, "a", dev, inputs=(("a", a), ("b", b)))
        lhs, rhs = (a.T if trans_a else a), (b.T if trans_b else b)
        if accumulate:
            c += cp.matmul(lhs, rhs)
        else:
            cp.matmul(lhs, rhs, out=c)
    return c


# ---------------------------------------------------------------- relu

def relu_fwd(x, out=None):
    op = "relu_fwd"
    dev = _first(op, "x", x)
    with _cupy().cuda.Device(dev):
        y = _dout(op, "out", out, x.shape, x.dtype, "x", dev, inputs=(("x", x),), in_place=("x",))
        _C.relu_fwd_cuda(_ptr(x), _ptr(y), x.size, _code(x), _stream())
    return y


def relu_bwd(dy, y, out=None):
    op = "relu_bwd"
    dev = _first(op, "dy", dy)
    _darray(op, "y", y, "dy", dev, dtype=dy.dtype)
    if tuple(y.shape) != tuple(dy.shape):
        raise ValueError(f"{op}: y must have the shape of dy {tuple(dy.shape)}, got {tuple(y.shape)}")
    with _cupy().cuda.Device(dev):
        dx = _dout(op, "out", out, dy.shape, dy.dtype, "dy", dev, inputs=(("dy", dy), ("y", y)),
                  in_place=("dy", "y"))
        _C.relu_bwd_cuda(_ptr(dy), _ptr(y), _ptr(dx), dy.size, _code(dy), _stream())
    return dx


# ---------------------------------------------------------------- optimizer steps (signatures of cnnkit._C's)
# Keyword-only extras: ctl (the optimizer's device control block, a float64 CuPy array laid out as
# cnnkit._C.optim_ctl_layout; see OptimCtl in csrc/ops/optim.h), group (this group's slots in it) and
# clip_norm (> 0: clip by the global norm held in the block). With ctl, a step whose finite flag is 0.0 writes
# nothing, and the step-dependent scalars are made on the device from the group's step count: pass the
# step-free values (adam_step: neg_step_size=-lr, bc2_sqrt ignored; adagrad_step: neg_clr=-lr and lr_decay;
# sgd_step: `first` ignored) and, with clip_norm, gscale=+-1 (the sign; -1 for maximize).

def _flat(op, name, a, ref, dev, n, dtype):
    if a is None:
        return None
    _darray(op, name, a, ref, dev, dtype=dtype)
    if a.size != n:
        raise ValueError(f"{op}: {name} must have {n} elements (as g), got {a.size}")
    return a


def _step_args(op, p, g):
    dev = _first(op, "g", g)
    _flat(op, "p", p, "g", dev, g.size, g.dtype)
    return dev


def ctl_size(groups):
    """Elements of a control block for `groups` param groups."""
    lay = _C.optim_ctl_layout
    return lay["group0"] + lay["per_group"] * groups


def _ctl(op, ctl, ref, dev, groups):
    """0 (no block) or the device pointer of a float64 block with room for `groups` groups."""
    if ctl is None:
        return 0
    _darray(op, "ctl", ctl, ref, dev, ndim=1, dtype=np.float64)
    if ctl.size < ctl_size(groups):
        raise ValueError(f"{op}: ctl must have at least {ctl_size(groups)} elements for {groups} group(s), "
                         f"got {ctl.size}")
    return _ptr(ctl)


def _group(op, group):
    return _ops._int(op, "group", group, minimum=0)


def sgd_step(p, g, momentum_buffer, neg_lr, momentum, one_minus_dampening, nesterov, first, gscale, gclip, wd, l1,
             *, ctl=None, group=0, clip_norm=0.0):
    op = "sgd_step"
    dev = _step_args(op, p, g)
    nesterov, first = _flag(op, "nesterov", nesterov), _flag(op, "first", first)
    if momentum != 0.0 and momentum_buffer is None:
        raise ValueError(f"{op}: momentum_buffer is required when momentum != 0")
    _flat(op, "momentum_buffer", momentum_buffer, "g", dev, g.size, g.dtype)
    group = _group(op, group)
    k = _ctl(op, ctl, "g", dev, group + 1)
    with _cupy().cuda.Device(dev):
        _C.sgd_step_cuda(_ptr(p), _ptr(g), _ptr(momentum_buffer), g.size, neg_lr, momentum,
                         one_minus_dampening, nesterov, first, gscale, gclip, wd, l1, _code(g), _stream(),
                         k, group, clip_norm)


def adagrad_step(p, g, sum, neg_clr, eps, gscale, gclip, wd, l1, *, ctl=None, group=0,  # noqa: A002 (_C's name)
                 clip_norm=0.0, lr_decay=0.0):
    op = "adagrad_step"
    dev = _step_args(op, p, g)
    _flat(op, "sum", sum, "g", dev, g.size, g.dtype)
    group = _group(op, group)
    k = _ctl(op, ctl, "g", dev, group + 1)
    with _cupy().cuda.Device(dev):
        _C.adagrad_step_cuda(_ptr(p), _ptr(g), _ptr(sum), g.size, neg_clr, eps, gscale, gclip, wd, l1,
                             _code(g), _stream(), k, group, clip_norm, lr_decay)


def rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, neg_lr, alpha, eps, momentum, gscale, gclip, wd, l1,
                 *, ctl=None, group=0, clip_norm=0.0):
    op = "rmsprop_step"
    dev = _step_args(op, p, g)
    if momentum > 0.0 and momentum_buffer is None:
        raise ValueError(f"{op}: momentum_buffer is required when momentum > 0")
    _flat(op, "square_avg", square_avg, "g", dev, g.size, g.dtype)
    _flat(op, "grad_avg", grad_avg, "g", dev, g.size, g.dtype)
    buf = _flat(op, "momentum_buffer", momentum_buffer, "g", dev, g.size, g.dtype) if momentum > 0.0 else None
    group = _group(op, group)
    k = _ctl(op, ctl, "g", dev, group + 1)
    with _cupy().cuda.Device(dev):
        _C.rmsprop_step_cuda(_ptr(p), _ptr(g), _ptr(square_avg), _ptr(grad_avg), _ptr(buf), g.size, neg_lr,
                             alpha, eps, momentum, gscale, gclip, wd, l1, _code(g), _stream(), k, group, clip_norm)


def adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps, neg_step_size, bc2_sqrt, decay, gscale,
              gclip, wd, l1, *, ctl=None, group=0, clip_norm=0.0):
    op = "adam_step"
    dev = _step_args(op, p, g)
    _flat(op, "exp_avg", exp_avg, "g", dev, g.size, g.dtype)
    _flat(op, "exp_avg_sq", exp_avg_sq, "g", dev, g.size, g.dtype)
    _flat(op, "max_exp_avg_sq", max_exp_avg_sq, "g", dev, g.size, g.dtype)
    group = _group(op, group)
    k = _ctl(op, ctl, "g", dev, group + 1)
    with _cupy().cuda.Device(dev):
        _C.adam_step_cuda(_ptr(p), _ptr(g), _ptr(exp_avg), _ptr(exp_avg_sq), _ptr(max_exp_avg_sq), g.size,
                          beta1, beta2, eps, neg_step_size, bc2_sqrt, decay, gscale, gclip, wd, l1, _code(g),
                          _stream(), k, group, clip_norm)


def grad_sumsq_device(g, out=None, accumulate=False, workspace=None):
    """A float64 CuPy array [sum of g**2, 1.0 if every g is finite else 0.0], left on the device.

    out: write into out[0:2] instead (a float64 array of >= 2 elements, e.g. a control block); accumulate: add
    the sum to out[0] and leave out[1] at 1.0 only if it was. workspace: reusable scratch of
    grad_sumsq_workspace() elements (allocated per call when None)."""
    op = "grad_sumsq"
    dev = _first(op, "g", g)
    accumulate = _flag(op, "accumulate", accumulate)
    if accumulate and out is None:
        raise ValueError(f"{op}: accumulate=True needs out= (the [sum, finite] pair to add into)")
    if out is not None:
        _darray(op, "out", out, "g", dev, ndim=1, dtype=np.float64)
        if out.size < 2:
            raise ValueError(f"{op}: out must have at least 2 elements, got {out.size}")
    cp = _cupy()
    with cp.cuda.Device(dev):
        if workspace is None:
            workspace = cp.empty(_C.grad_sumsq_workspace_cuda(), dtype=cp.float64)
        else:
            _darray(op, "workspace", workspace, "g", dev, ndim=1, dtype=np.float64)
            if workspace.size < _C.grad_sumsq_workspace_cuda():
                raise ValueError(f"{op}: workspace must have {_C.grad_sumsq_workspace_cuda()} elements, "
                                 f"got {workspace.size}")
        if out is None:
            out = cp.empty(2, dtype=cp.float64)
        _C.grad_sumsq_cuda(_ptr(g), g.size, _ptr(workspace), _ptr(out), _code(g), _stream(),
                           accumulate)
    return out


def grad_sumsq_workspace():
    """float64 elements of the scratch grad_sumsq_device needs."""
    return _C.grad_sumsq_workspace_cuda()


def grad_sumsq(g):
    """(sum of g**2 as a float, all finite as a bool), as the CPU binding; one host sync."""
    s, finite = grad_sumsq_device(g).get().tolist()
    return s, finite == 1.0


def grad_scale_clamp(g, scale, clip, *, ctl=None, clip_norm=0.0):
    """g = clamp(g * scale, -clip, clip). With ctl: nothing when its finite flag is 0.0, and with clip_norm > 0
    the scale is multiplied by clip_grad_norm_'s coefficient from the norm held in ctl (no host read)."""
    op = "grad_scale_clamp"
    dev = _first(op, "g", g)
    k = _ctl(op, ctl, "g", dev, 0)
    with _cupy().cuda.Device(dev):
        _C.grad_scale_clamp_cuda(_ptr(g), g.size, scale, clip, _code(g), _stream(), k, clip_norm)


def maxnorm_rows(p, max_norm, *, ctl=None):
    """torch.renorm(p, 2, 0, max_norm) in place; with ctl: nothing when its finite flag is 0.0."""
    op = "maxnorm_rows"
    dev = _first(op, "p", p)
    if p.ndim < 1:
        raise ValueError(f"{op}: p must have at least 1 dimension, got a scalar")
    rows = p.shape[0]
    cols = p.size // rows if rows else 0
    k = _ctl(op, ctl, "p", dev, 0)
    with _cupy().cuda.Device(dev):
        _C.maxnorm_rows_cuda(_ptr(p), rows, cols, max_norm, _code(p), _stream(), k)


def optim_ctl_finish(ctl, groups):
    """After every group's step: if the finite flag is 1.0, each of the first `groups` step counters += 1 and
    SGD's first-step flags clear; else the skip counter += 1. One device thread; no host sync."""
    op = "optim_ctl_finish"
    groups = _ops._int(op, "groups", groups, minimum=0)
    dev = _first(op, "ctl", ctl, ndim=1, dtype=np.float64)
    ptr = _ctl(op, ctl, "ctl", dev, groups)
    with _cupy().cuda.Device(dev):
        _C.optim_ctl_finish_cuda(ptr, groups, _stream())


# ---------------------------------------------------------------- augmentation (cnnkit.data.transforms)

_AUG_RECORD = 16  # values recorded per sample (ops/augment.h kAugRecord)


def aug_pipeline(x, ids, stages, seed, epoch, records=None):
    """The device face of ``cnnkit._C.aug_pipeline``, called by cnnkit.data.transforms for CuPy batches.

    x: (N, C, H, W) float32/float64; ids: (N,) int64 on x's device; stages: the (kind, stream, a, P, Q, eigval,
    eigvec) tuples the transforms build, a lighting stage's eigval (C,) and eigvec (C, C) as float64 CuPy arrays
    on x's device; records: None or (N, 16) float64 on x's device, written with the first stage's draws.
    Returns y (N, C, P, Q) on x's device, queued on the current stream (nothing is synchronised).
    """
    op = "augment"
    dev = _first(op, "x", x, ndim=4)
    N, C = x.shape[0], x.shape[1]
    _darray(op, "ids", ids, "x", dev, ndim=1, dtype=np.int64)
    if tuple(ids.shape) != (N,):
        raise ValueError(f"{op}: ids must have shape ({N},) (one index per sample), got {tuple(ids.shape)}")
    if records is not None:
        _darray(op, "records", records, "x", dev, ndim=2, dtype=np.float64)
        if tuple(records.shape) != (N, _AUG_RECORD):
            raise ValueError(f"{op}: records must have shape ({N}, {_AUG_RECORD}), got {tuple(records.shape)}")
    if not stages:
        raise ValueError(f"{op}: stages must not be empty")
    dstages = []
    for kind, stream, a, P, Q, eigval, eigvec in stages:
        if eigval is not None or eigvec is not None:
            _darray(op, "eigval", eigval, "x", dev, ndim=1, dtype=np.float64)
            _darray(op, "eigvec", eigvec, "x", dev, ndim=2, dtype=np.float64)
            if tuple(eigval.shape) != (C,) or tuple(eigvec.shape) != (C, C):
                raise ValueError(f"{op}: eigval must be ({C},) and eigvec ({C}, {C}) for x with C = {C}, got "
                                 f"{tuple(eigval.shape)} and {tuple(eigvec.shape)}")
        dstages.append((kind, stream, list(a), P, Q, _ptr(eigval), _ptr(eigvec)))
    P, Q = stages[-1][3], stages[-1][4]
    cp = _cupy()
    with cp.cuda.Device(dev):
        y = cp.empty((N, C, P, Q), dtype=x.dtype)
        _C.aug_pipeline_cuda(_ptr(x), _ptr(y), _ptr(ids), list(x.shape), dstages, seed, epoch,
                             _ptr(records), _code(x), _stream())
    return y
