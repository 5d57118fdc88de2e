"""Adam and AdamW (torch.optim.Adam, torch.optim.AdamW), with optional AMSGrad."""
from .. import _C
from .._validate import check_nonneg, check_unit
from ..ops import optim_steps
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015; torch.optim.Adam): bias-corrected moments, eps added after sqrt(v_hat),
    optional AMSGrad (Reddi et al. 2018). weight_decay is coupled L2 (added to g)."""

    _name = "Adam"
    _decoupled = False
    _primary = "exp_avg"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 l1=0.0, max_norm=None, decay_bias=True, **kw):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad),
                         l1=l1, max_norm=max_norm, decay_bias=decay_bias, **kw)

    def _check(self, g):
        b = g["betas"]
        if not isinstance(b, (tuple, list)) or len(b) != 2:
            raise ValueError(f"{self._name}: betas must be a pair (beta1, beta2), got {b!r}")
        g["betas"] = (check_unit(self._name, "beta1 (betas[0])", b[0]),
                      check_unit(self._name, "beta2 (betas[1])", b[1]))
        g["eps"] = check_nonneg(self._name, "eps", g["eps"])
        g["amsgrad"] = bool(g["amsgrad"])

    def _state_spec(self, g):
        return [("exp_avg", 0.0), ("exp_avg_sq", 0.0)] + ([("max_exp_avg_sq", 0.0)] if g["amsgrad"] else [])

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev):
        beta1, beta2 = g["betas"]
        lr = g["lr"]
        # torch/optim/adam.py, _single_tensor_adam (not capturable): csrc/ops/optim.h adam_scalars, in double;
        # on a GPU made on the device from the group's step count (the host passes -lr)
        neg_step_size, bc2_sqrt = (-lr, 1.0) if dev else _C.adam_scalars(lr, beta1, beta2, float(st["step"]))
        decay = 1.0
        if self._decoupled:
            decay, wd = (1 - lr * wd if wd != 0 else 1.0), 0.0
        vmax = st["max_exp_avg_sq"][lo:hi] if g["amsgrad"] else None
        optim_steps.adam_step(flat.data[lo:hi], flat.grad[lo:hi], st["exp_avg"][lo:hi], st["exp_avg_sq"][lo:hi], vmax,
                              beta1, beta2, g["eps"], neg_step_size, bc2_sqrt, decay, gscale, gclip, wd, l1, **dev)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019; torch.optim.AdamW): Adam with decoupled decay p *= 1 - lr*wd."""

    _name = "AdamW"
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, **kw):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, **kw)
