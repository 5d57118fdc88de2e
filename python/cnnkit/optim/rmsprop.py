"""RMSProp (torch.optim.RMSprop), centered or not, with optional momentum."""
from .._validate import check_nonneg
from ..ops import optim_steps
from .optimizer import Optimizer


class RMSProp(Optimizer):
    """RMSProp (Hinton, lecture 6e; torch.optim.RMSprop): s = alpha*s + (1-alpha)*g^2,
    p -= lr * g / (sqrt(s [- gbar^2 if centered]) + eps), with optional momentum on g / (...)."""

    _name = "RMSProp"
    _primary = "square_avg"

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 l1=0.0, max_norm=None, decay_bias=True, **kw):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered), l1=l1, max_norm=max_norm,
                         decay_bias=decay_bias, **kw)

    def _check(self, g):
        g["alpha"] = check_nonneg(self._name, "alpha", g["alpha"])
        g["eps"] = check_nonneg(self._name, "eps", g["eps"])
        g["momentum"] = check_nonneg(self._name, "momentum", g["momentum"])
        g["centered"] = bool(g["centered"])

    def _state_spec(self, g):
        return ([("square_avg", 0.0)] + ([("grad_avg", 0.0)] if g["centered"] else [])
                + ([("momentum_buffer", 0.0)] if g["momentum"] > 0 else []))

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev):
        ga = st["grad_avg"][lo:hi] if g["centered"] else None
        buf = st["momentum_buffer"][lo:hi] if g["momentum"] > 0 else None
        optim_steps.rmsprop_step(flat.data[lo:hi], flat.grad[lo:hi], st["square_avg"][lo:hi], ga, buf, -g["lr"],
                                 g["alpha"], g["eps"], g["momentum"], gscale, gclip, wd, l1, **dev)
