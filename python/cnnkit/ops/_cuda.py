"""The GPU backend of ``cnnkit.ops``: the entry points of the ``cnnkit._C`` CPU bindings, taking CuPy arrays.

``cnnkit.ops._backend.kernels(a)`` returns this module for a CuPy array. The op functions (conv2d_fwd ...
batchnorm_bwd) have the signatures of their ``_C`` namesakes, outputs passed in, and do no validation of
their own: ``cnnkit.ops`` has checked every array (dtype, layout, alignment, device, shapes) and allocated
the outputs on the inputs' GPU. They pass integer device pointers, the dtype code and CuPy's current stream
to a ``cnnkit._C.*_cuda`` binding, which re-validates the shapes in C++ and queues the kernel. Matrix products
use ``cupy.matmul`` (cuBLAS through CuPy); BatchNorm is CuPy arithmetic. Nothing here synchronises or copies
to the host, except ``grad_sumsq``, which returns Python numbers (use ``grad_sumsq_device`` to keep them on
the GPU; the optimizer keeps them in its device control block, read by the step kernels themselves).

The optimizer steps too are launched after their checks (by cnnkit.ops.optim_steps). The gradient-norm
helpers and optim_ctl_finish, called directly by cnnkit.optim, check their arrays here, as the ``_C`` CPU
bindings do in C++.
"""
import numpy as np

from .. import _C, cuda
from .._validate import Ref, check_array, check_ctl, check_flag as _flag, check_int as _int, first_array
from .._xp import is_device_array, require_cupy as _cupy

_DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}


def _first(op, name, a, ndim=None, dtype=None):
    """Check the first array of a function called directly: a CuPy array (and CUDA usable); its device id."""
    if not is_device_array(a):
        raise TypeError(f"{op}: {name} must be a cupy.ndarray, got {type(a).__name__}")
    return first_array(op, name, a, ndim=ndim, dtype=dtype).gpu


def _darray(op, name, a, ref, device, ndim=None, dtype=None):
    """Check that `a` is a C-contiguous CuPy array of a float dtype (or `dtype`) on GPU `device`, the GPU of
    the first array `ref`."""
    return check_array(op, name, a, Ref(ref, device), ndim=ndim, dtype=dtype)


def _ptr(a):
    """The device pointer of a CuPy array (0 for None), from ``__cuda_array_interface__`` (the layout was
    checked before: C-contiguous, so the pointer and the shape say everything)."""
    return 0 if a is None else a.__cuda_array_interface__["data"][0]


def _stream():
    return _cupy().cuda.get_current_stream().ptr


def _code(a):
    return _DTYPE_CODE[np.dtype(a.dtype)]


def _on(a):
    """The context of a's GPU, so that the kernel is queued there."""
    return _cupy().cuda.Device(a.device.id)


# ---------------------------------------------------------------- conv2d
# The three GEMM passes take cnnkit.cuda.get_tf32() at call time (float32 only; float64 ignores it).

def conv2d_fwd(x, w, b, y, stride, padding, dilation, groups):
    with _on(x):
        _C.conv2d_fwd_cuda(_ptr(x), _ptr(w), _ptr(b), _ptr(y), list(x.shape), list(w.shape), stride, padding,
                           dilation, groups, _code(x), _stream(), cuda.get_tf32())


def conv2d_bwd_data(dy, w, dx, stride, padding, dilation, groups):
    with _on(dy):
        _C.conv2d_bwd_data_cuda(_ptr(dy), _ptr(w), _ptr(dx), list(dx.shape), list(w.shape), stride, padding,
                                dilation, groups, _code(dy), _stream(), cuda.get_tf32())


def conv2d_bwd_weight(dy, x, dw, stride, padding, dilation, groups, accumulate):
    with _on(dy):
        _C.conv2d_bwd_weight_cuda(_ptr(dy), _ptr(x), _ptr(dw), list(x.shape), list(dw.shape), stride, padding,
                                  dilation, groups, accumulate, _code(dy), _stream(), cuda.get_tf32())


def conv2d_bwd_bias(dy, db, accumulate):
    with _on(dy):
        _C.conv2d_bwd_bias_cuda(_ptr(dy), _ptr(db), list(dy.shape), accumulate, _code(dy), _stream())


# ---------------------------------------------------------------- maxpool2d

def maxpool2d_fwd(x, y, indices, kernel, stride, padding, dilation, ceil_mode):
    with _on(x):
        _C.maxpool2d_fwd_cuda(_ptr(x), _ptr(y), _ptr(indices), list(x.shape), kernel, stride, padding, dilation,
                              ceil_mode, _code(x), _stream())


def maxpool2d_bwd(dy, indices, dx):
    with _on(dy):
        _C.maxpool2d_bwd_cuda(_ptr(dy), _ptr(indices), _ptr(dx), list(dy.shape), list(dx.shape), _code(dy),
                              _stream())


# ---------------------------------------------------------------- dropout

def dropout_fwd(x, y, mask, p, seed, offset):
    with _on(x):
        _C.dropout_fwd_cuda(_ptr(x), _ptr(y), _ptr(mask), x.size, p, seed, offset, _code(x), _stream())


def dropout_bwd(dy, mask, dx, p):
    with _on(dy):
        _C.dropout_bwd_cuda(_ptr(dy), _ptr(mask), _ptr(dx), dy.size, p, _code(dy), _stream())


# ---------------------------------------------------------------- matmul (cupy.matmul, i.e. cuBLAS)

def matmul(a, b, c, trans_a, trans_b, accumulate):
    cp = _cupy()
    with _on(a):
        lhs, rhs = (a.T if trans_a else a), (b.T if trans_b else b)
        if accumulate:
            c += cp.matmul(lhs, rhs)
        else:
            cp.matmul(lhs, rhs, out=c)


# ---------------------------------------------------------------- relu

def relu_fwd(x, y):
    with _on(x):
        _C.relu_fwd_cuda(_ptr(x), _ptr(y), x.size, _code(x), _stream())


def relu_bwd(dy, y, dx):
    with _on(dy):
        _C.relu_bwd_cuda(_ptr(dy), _ptr(y), _ptr(dx), dy.size, _code(dy), _stream())


# ---------------------------------------------------------------- batchnorm (CuPy arithmetic)
# The arithmetic of the BatchNorm layers on a GPU, reductions over the batch and the plane in x's dtype. The
# shape checks are those the CPU bindings make in C++.

def _bn_view(op, x, **per_channel):
    """(axes, broadcast shape) of x (N, C, ...); each keyword array must have shape (C,)."""
    C = x.shape[1]
    for name, a in per_channel.items():
        if a is not None and tuple(a.shape) != (C,):
            raise ValueError(f"{op}: {name} must have shape ({C},), got {tuple(a.shape)}")
    return (0,) + tuple(range(2, x.ndim)), (1, C) + (1,) * (x.ndim - 2)


def _same_shape(op, a_name, a, b_name, b):
    if tuple(b.shape) != tuple(a.shape):
        raise ValueError(f"{op}: {b_name} must have the shape of {a_name} {tuple(a.shape)}, got {tuple(b.shape)}")


def batchnorm_stats(x, mean, var):
    axes, bshape = _bn_view("batchnorm_stats", x, mean=mean, var=var)
    with _on(x):
        m = x.mean(axis=axes)
        xc = x - m.reshape(bshape)
        mean[...] = m
        var[...] = (xc * xc).mean(axis=axes)


def channel_affine(x, alpha, beta, y):
    op = "channel_affine"
    axes, bshape = _bn_view(op, x, alpha=alpha, beta=beta)
    _same_shape(op, "x", x, "y", y)
    with _on(x):
        y[...] = x * alpha.reshape(bshape) + beta.reshape(bshape)


def batchnorm_bwd(dy, x, mean, invstd, weight, train, dx, sum_dy, dotp):
    op = "batchnorm_bwd"
    axes, bshape = _bn_view(op, x, mean=mean, invstd=invstd, sum_dy=sum_dy, dotp=dotp, weight=weight)
    _same_shape(op, "x", x, "dy", dy)
    if dx is not None:
        _same_shape(op, "x", x, "dx", dx)
    with _on(x):
        xc = x - mean.reshape(bshape)
        sum_dy[...] = dy.sum(axis=axes)
        dotp[...] = (dy * xc).sum(axis=axes)
        if dx is None:
            return
        g = dy * weight.reshape(bshape) if weight is not None else dy
        if not train:
            dx[...] = g * invstd.reshape(bshape)
            return
        # dx = invstd * (g - mean(g) - xhat * mean(g * xhat)), the means over the batch and the plane
        xhat = xc * invstd.reshape(bshape)
        gm = g.mean(axis=axes).reshape(bshape)
        gxm = (g * xhat).mean(axis=axes).reshape(bshape)
        dx[...] = (g - gm - xhat * gxm) * invstd.reshape(bshape)


# ---------------------------------------------------------------- optimizer steps (signatures of cnnkit._C's)
# Keyword-only extras: ctl (the optimizer's device control block, a float64 CuPy array laid out as
# cnnkit._C.optim_ctl_layout; see OptimCtl in csrc/ops/optim.h), group (this group's slots in it) and
# clip_norm (> 0: clip by the global norm held in the block). With ctl, a step whose finite flag is 0.0 writes
# nothing, and the step-dependent scalars are made on the device from the group's step count: pass the
# step-free values (adam_step: neg_step_size=-lr, bc2_sqrt ignored; adagrad_step: neg_clr=-lr and lr_decay;
# sgd_step: `first` ignored) and, with clip_norm, gscale=+-1 (the sign; -1 for maximize).

def ctl_size(groups):
    """Elements of a control block for `groups` param groups."""
    lay = _C.optim_ctl_layout
    return lay["group0"] + lay["per_group"] * groups


def _ctl(op, ctl, ref, dev, groups):
    """0 (no block) or the device pointer of a float64 block with room for `groups` groups."""
    if ctl is None:
        return 0
    check_ctl(op, ctl, Ref(ref, dev), ctl_size(groups), groups)
    return _ptr(ctl)


# The steps are launched by cnnkit.ops.optim_steps, which has checked every array (size, dtype, device), the
# flags, `group` and the block's size.

def sgd_step(p, g, momentum_buffer, neg_lr, momentum, one_minus_dampening, nesterov, first, gscale, gclip, wd, l1,
             *, ctl=None, group=0, clip_norm=0.0):
    with _on(g):
        _C.sgd_step_cuda(_ptr(p), _ptr(g), _ptr(momentum_buffer), g.size, neg_lr, momentum,
                         one_minus_dampening, nesterov, first, gscale, gclip, wd, l1, _code(g), _stream(),
                         _ptr(ctl), group, clip_norm)


def adagrad_step(p, g, sum, neg_clr, eps, gscale, gclip, wd, l1, *, ctl=None, group=0,  # noqa: A002 (_C's name)
                 clip_norm=0.0, lr_decay=0.0):
    with _on(g):
        _C.adagrad_step_cuda(_ptr(p), _ptr(g), _ptr(sum), g.size, neg_clr, eps, gscale, gclip, wd, l1,
                             _code(g), _stream(), _ptr(ctl), group, clip_norm, lr_decay)


def rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, neg_lr, alpha, eps, momentum, gscale, gclip, wd, l1,
                 *, ctl=None, group=0, clip_norm=0.0):
    buf = _ptr(momentum_buffer) if momentum > 0.0 else 0   # the kernel keeps no momentum when momentum is 0
    with _on(g):
        _C.rmsprop_step_cuda(_ptr(p), _ptr(g), _ptr(square_avg), _ptr(grad_avg), buf, g.size, neg_lr,
                             alpha, eps, momentum, gscale, gclip, wd, l1, _code(g), _stream(), _ptr(ctl), group,
                             clip_norm)


def adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps, neg_step_size, bc2_sqrt, decay, gscale,
              gclip, wd, l1, *, ctl=None, group=0, clip_norm=0.0):
    with _on(g):
        _C.adam_step_cuda(_ptr(p), _ptr(g), _ptr(exp_avg), _ptr(exp_avg_sq), _ptr(max_exp_avg_sq), g.size,
                          beta1, beta2, eps, neg_step_size, bc2_sqrt, decay, gscale, gclip, wd, l1, _code(g),
                          _stream(), _ptr(ctl), group, clip_norm)


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
    groups = _int(op, "groups", groups, minimum=0)
    dev = _first(op, "ctl", ctl, ndim=1, dtype=np.float64)
    ptr = _ctl(op, ctl, "ctl", dev, groups)
    with _cupy().cuda.Device(dev):
        _C.optim_ctl_finish_cuda(ptr, groups, _stream())


# ---------------------------------------------------------------- augmentation (cnnkit.ops.augment)

def aug_pipeline(x, y, ids, stages, seed, epoch, num_threads, records):
    """``cnnkit._C.aug_pipeline`` on CuPy arrays: a lighting stage's eigval and eigvec become device pointers;
    num_threads is unused (one launch runs the batch)."""
    dstages = [(kind, stream, list(a), P, Q, _ptr(eigval), _ptr(eigvec))
               for kind, stream, a, P, Q, eigval, eigvec in stages]
    with _on(x):
        _C.aug_pipeline_cuda(_ptr(x), _ptr(y), _ptr(ids), list(x.shape), dstages, seed, epoch, _ptr(records),
                             _code(x), _stream())
