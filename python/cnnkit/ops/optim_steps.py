"""optim_steps: the fused optimizer steps of cnnkit.optim (signatures of their cnnkit._C namesakes).

For CuPy arrays each step is checked here (_validate's check_step_arrays and check_ctl: every array the kernel
touches, the control block's size, the flags) and launched by ``ops._cuda``; numpy arrays go to the ``_C``
binding as they are, which checks them itself in C++. The keyword-only arguments exist on a GPU only: ctl (the
optimizer's device control block, a float64 array laid out as ``cnnkit._C.optim_ctl_layout``; see OptimCtl in
csrc/ops/optim.h), group (this group's slots in it), clip_norm (> 0: clip by the global norm held in the block)
and adagrad's lr_decay; see ops/_cuda.py for what they change.
"""
from .. import _C
from .._validate import check_ctl, check_flag, check_int, check_step_arrays
from . import _backend


def _on_device(*arrays):
    return any(_backend.on_device(a) for a in arrays if a is not None)


def _ctl(op, ctl, ref, group):
    """Check group (>= 0) and ctl (None, or room for groups 0..group)."""
    group = check_int(op, "group", group, minimum=0)
    if ctl is not None:
        lay = _C.optim_ctl_layout
        check_ctl(op, ctl, ref, lay["group0"] + lay["per_group"] * (group + 1), group + 1)
    return group


def sgd_step(p, g, momentum_buffer, neg_lr, momentum, one_minus_dampening, nesterov, first, gscale, gclip, wd, l1,
             **device):
    op = "sgd_step"
    if _on_device(p, g, momentum_buffer):
        ref = check_step_arrays(op, g, [("p", p)])
        nesterov, first = check_flag(op, "nesterov", nesterov), check_flag(op, "first", first)
        if momentum != 0.0 and momentum_buffer is None:
            raise ValueError(f"{op}: momentum_buffer is required when momentum != 0")
        check_step_arrays(op, g, [("momentum_buffer", momentum_buffer)])
        device["group"] = _ctl(op, device.get("ctl"), ref, device.get("group", 0))
    _backend.kernels(g).sgd_step(p, g, momentum_buffer, neg_lr, momentum, one_minus_dampening, nesterov, first,
                                 gscale, gclip, wd, l1, **device)


def adagrad_step(p, g, sum, neg_clr, eps, gscale, gclip, wd, l1, **device):  # noqa: A002 (_C's name)
    op = "adagrad_step"
    if _on_device(p, g, sum):
        ref = check_step_arrays(op, g, [("p", p), ("sum", sum)])
        device["group"] = _ctl(op, device.get("ctl"), ref, device.get("group", 0))
    _backend.kernels(g).adagrad_step(p, g, sum, neg_clr, eps, gscale, gclip, wd, l1, **device)


def rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, neg_lr, alpha, eps, momentum, gscale, gclip, wd, l1,
                 **device):
    op = "rmsprop_step"
    if _on_device(p, g, square_avg, grad_avg, momentum_buffer):
        ref = check_step_arrays(op, g, [("p", p)])
        if momentum > 0.0 and momentum_buffer is None:
            raise ValueError(f"{op}: momentum_buffer is required when momentum > 0")
        check_step_arrays(op, g, [("square_avg", square_avg), ("grad_avg", grad_avg)] +
                          ([("momentum_buffer", momentum_buffer)] if momentum > 0.0 else []))
        device["group"] = _ctl(op, device.get("ctl"), ref, device.get("group", 0))
    _backend.kernels(g).rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, neg_lr, alpha, eps, momentum,
                                     gscale, gclip, wd, l1, **device)


def adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps, neg_step_size, bc2_sqrt, decay, gscale,
              gclip, wd, l1, **device):
    op = "adam_step"
    if _on_device(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq):
        ref = check_step_arrays(op, g, [("p", p), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq),
                                        ("max_exp_avg_sq", max_exp_avg_sq)])
        device["group"] = _ctl(op, device.get("ctl"), ref, device.get("group", 0))
    _backend.kernels(g).adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps, neg_step_size,
                                  bc2_sqrt, decay, gscale, gclip, wd, l1, **device)
