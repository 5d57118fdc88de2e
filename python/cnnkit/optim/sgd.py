"""SGD with momentum, dampening and Nesterov (torch.optim.SGD)."""
from .._validate import check_nonneg, check_real
from ..ops import optim_steps
from .optimizer import Optimizer


class SGD(Optimizer):
    """SGD with momentum, dampening and Nesterov (torch.optim.SGD): v = mu*v + (1-dampening)*g, p -= lr*v.

    The velocity excludes lr, and on the first step v = g (as torch). nesterov: p -= lr*(g + mu*v).
    """

    _name = "SGD"
    _first_state = "momentum_buffer"

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 l1=0.0, max_norm=None, decay_bias=True, **kw):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov), l1=l1, max_norm=max_norm,
                         decay_bias=decay_bias, **kw)

    def _check(self, g):
        g["momentum"] = check_nonneg(self._name, "momentum", g["momentum"])
        g["dampening"] = check_real(self._name, "dampening", g["dampening"])
        g["nesterov"] = bool(g["nesterov"])
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError(f"{self._name}: nesterov requires momentum > 0 and dampening = 0, "
                             f"got momentum={g['momentum']}, dampening={g['dampening']}")

    def _state_spec(self, g):
        return [("momentum_buffer", 0.0)] if g["momentum"] != 0 else []

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev):
        buf = st.get("momentum_buffer") if g["momentum"] != 0 else None
        optim_steps.sgd_step(flat.data[lo:hi], flat.grad[lo:hi], None if buf is None else buf[lo:hi], -g["lr"],
                             g["momentum"], 1 - g["dampening"], g["nesterov"], st.get("_first", False), gscale, gclip,
                             wd, l1, **dev)
