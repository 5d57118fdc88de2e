"""Gradient clipping by global norm or by value, and the max-norm constraint, outside an optimizer step."""
import math

from .. import _C
from .._validate import check_positive
from .._xp import array_module, is_device_array
from ..ops import _backend
from ..parameter import Parameter
from .optimizer import _LAYOUT, Optimizer


def _grad_arrays(op, params_or_opt):
    """Flat gradient buffers of an optimizer, or the gradients of a list of Parameters."""
    if isinstance(params_or_opt, Optimizer):
        return [f.grad for f in params_or_opt._flats if f is not None]
    if isinstance(params_or_opt, Parameter):
        params_or_opt = [params_or_opt]
    out = []
    for p in params_or_opt:
        if not isinstance(p, Parameter):
            raise TypeError(f"{op}: expected an Optimizer or Parameters, got {type(p).__name__}")
        out.append(p.grad)
    return out


def clip_grad_norm_(params_or_opt, max_norm):
    """Scale all gradients in place so their global L2 norm is at most max_norm (torch's clip_grad_norm_:
    coefficient min(max_norm / (norm + 1e-6), 1)). One norm pass and one scaling pass per flat buffer.
    Returns the norm before clipping (inf or nan if a gradient is not finite; then nothing is scaled): a float
    for numpy gradients; for CuPy gradients a 0-d float64 CuPy array (nan when not finite), as torch returns a
    tensor, so that clipping on a GPU reads nothing back to the host."""
    op = "clip_grad_norm_"
    max_norm = check_positive(op, "max_norm", max_norm)
    grads = _grad_arrays(op, params_or_opt)
    if _on_device(op, grads):
        return _clip_grad_norm_device(grads, max_norm)
    total, finite = 0.0, True
    for g in grads:
        s, f = _C.grad_sumsq(g)
        total, finite = total + s, finite and f
    norm = math.sqrt(total) if finite else math.nan
    if finite:
        coef = _C.clip_coef(max_norm, total)
        for g in grads:
            _C.grad_scale_clamp(g, coef, math.inf)
    return norm


def _on_device(op, arrays):
    """True if every array is a CuPy array, False if every one is numpy (or there are none)."""
    dev = [is_device_array(a) for a in arrays]
    if any(dev) and not all(dev):
        raise TypeError(f"{op}: mixed devices: some gradients are cupy.ndarray (GPU), some numpy.ndarray (CPU); "
                        f"put every parameter on one device")
    return bool(dev) and dev[0]


def _clip_grad_norm_device(grads, max_norm):
    """The norm and the finite flag go into a 3-slot control block on the device, and the scaling kernels read
    the coefficient from it: no host sync."""
    xp, kernels = array_module(grads[0]), _backend.kernels(grads[0])
    with xp.cuda.Device(grads[0].device.id):
        ctl = xp.zeros(kernels.ctl_size(0), dtype=xp.float64)
        work = xp.empty(kernels.grad_sumsq_workspace(), dtype=xp.float64)
        for k, g in enumerate(grads):
            kernels.grad_sumsq_device(g, out=ctl, accumulate=k > 0, workspace=work)
        for g in grads:
            kernels.grad_scale_clamp(g, 1.0, math.inf, ctl=ctl, clip_norm=max_norm)
        return xp.where(ctl[_LAYOUT["finite"]] != 0.0, xp.sqrt(ctl[_LAYOUT["sumsq"]]), xp.nan)


def clip_grad_value_(params_or_opt, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value] in place (torch's clip_grad_value_)."""
    clip_value = check_positive("clip_grad_value_", "clip_value", clip_value)
    for g in _grad_arrays("clip_grad_value_", params_or_opt):
        _backend.kernels(g).grad_scale_clamp(g, 1.0, clip_value)


def apply_max_norm_(params, max_norm):
    """Max-norm constraint: rescale each unit's incoming weight vector (row of p.data along axis 0, i.e. the
    output unit / filter of a (K, C, R, S) or (out, in) weight) to L2 norm <= max_norm, as
    torch.renorm(w, 2, 0, max_norm). 1-D parameters (biases) are left alone."""
    max_norm = check_positive("apply_max_norm_", "max_norm", max_norm)
    for p in ([params] if isinstance(params, Parameter) else params):
        if p.data.ndim > 1:
            _backend.kernels(p.data).maxnorm_rows(p.data, max_norm)
