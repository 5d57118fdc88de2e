"""AdaGrad (torch.optim.Adagrad)."""
from .. import _C
from .._validate import check_nonneg
from ..ops import optim_steps
from .optimizer import Optimizer


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al. 2011; torch.optim.Adagrad): sum += g^2; p -= clr * g / (sqrt(sum) + eps),
    clr = lr / (1 + (t - 1) * lr_decay)."""

    _name = "AdaGrad"
    _primary = "sum"

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, *, l1=0.0, max_norm=None, decay_bias=True, **kw):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps),
                         l1=l1, max_norm=max_norm, decay_bias=decay_bias, **kw)

    def _check(self, g):
        g["lr_decay"] = check_nonneg(self._name, "lr_decay", g["lr_decay"])
        g["initial_accumulator_value"] = check_nonneg(self._name, "initial_accumulator_value",
                                                 g["initial_accumulator_value"])
        g["eps"] = check_nonneg(self._name, "eps", g["eps"])

    def _state_spec(self, g):
        return [("sum", g["initial_accumulator_value"])]

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev):
        p, grad, acc = flat.data[lo:hi], flat.grad[lo:hi], st["sum"][lo:hi]
        if dev:   # the decayed lr is made on the device from the group's step count
            optim_steps.adagrad_step(p, grad, acc, -g["lr"], g["eps"], gscale, gclip, wd, l1, lr_decay=g["lr_decay"],
                                     **dev)
        else:
            clr = _C.adagrad_clr(g["lr"], g["lr_decay"], float(st["step"]))
            _C.adagrad_step(p, grad, acc, -clr, g["eps"], gscale, gclip, wd, l1)
