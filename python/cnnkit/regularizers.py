"""Weight penalties a trainer adds to the data loss: L2, L1 and elastic net (CS231n "Regularization").

Each object gives the penalty's value, ``loss(params)``, and adds its gradient into ``p.grad`` with
``add_grad(params)`` (``+=``, like every parameter gradient in cnnkit). ``__call__`` does both and returns the
value. Conventions: L2(lam) is 0.5 * lam * sum(w^2), gradient lam * w, so it equals an optimizer's coupled
``weight_decay=lam`` (torch's meaning); L1(lam) is lam * sum(|w|), gradient lam * sign(w) (0 at 0), which
equals the optimizers' fused ``l1=lam``. ``decay_bias=False`` leaves 1-D parameters (biases, batch-norm
scales and shifts) out, as the optimizers' option of the same name; the default (True) penalises every
parameter, as torch's weight_decay does.
"""
import numbers

import numpy as np

from .parameter import Parameter

__all__ = ["Regularizer", "L2", "L1", "ElasticNet"]


def _coef(op, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not v >= 0:
        raise ValueError(f"{op}: invalid {name} {v} (must be >= 0)")
    return v


class Regularizer:
    """Base: l1 * sum|w| + 0.5 * l2 * sum(w^2) over the selected parameters."""

    _name = "Regularizer"

    def __init__(self, l1=0.0, l2=0.0, decay_bias=True):
        self.l1 = _coef(self._name, "l1", l1)
        self.l2 = _coef(self._name, "l2", l2)
        self.decay_bias = bool(decay_bias)

    def _selected(self, params):
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{self._name}: params must be cnnkit Parameters, got {type(p).__name__}")
        return [p for p in params if p.requires_grad and (self.decay_bias or p.data.ndim > 1)]

    def loss(self, params):
        """The penalty's value (a Python float, accumulated in float64)."""
        total = 0.0
        for p in self._selected(params):
            w = p.data
            if self.l2:
                total += 0.5 * self.l2 * float(np.dot(w.ravel(), w.ravel()))
            if self.l1:
                total += self.l1 * float(np.abs(w).sum(dtype=np.float64))
        return total

    def add_grad(self, params):
        """p.grad += d(penalty)/dw for every selected parameter."""
        for p in self._selected(params):
            if self.l2:
                p.grad += self.l2 * p.data
            if self.l1:
                p.grad += self.l1 * np.sign(p.data)

    def __call__(self, params):
        params = list(params) if not isinstance(params, Parameter) else [params]
        value = self.loss(params)
        self.add_grad(params)
        return value

    def __repr__(self):
        return f"{self._name}(l1={self.l1}, l2={self.l2}, decay_bias={self.decay_bias})"


class L2(Regularizer):
    """0.5 * lam * sum(w^2); gradient lam * w (= weight_decay=lam)."""
    _name = "L2"

    def __init__(self, lam, decay_bias=True):
        super().__init__(l2=_coef("L2", "lam", lam), decay_bias=decay_bias)


class L1(Regularizer):
    """lam * sum(|w|); gradient lam * sign(w) (= the optimizers' l1=lam). Drives weights to exact zeros only
    with a proximal step; with (sub)gradient steps they oscillate around zero."""
    _name = "L1"

    def __init__(self, lam, decay_bias=True):
        super().__init__(l1=_coef("L1", "lam", lam), decay_bias=decay_bias)


class ElasticNet(Regularizer):
    """l1 * sum(|w|) + 0.5 * l2 * sum(w^2) (Zou & Hastie 2005)."""
    _name = "ElasticNet"

    def __init__(self, l1, l2, decay_bias=True):
        super().__init__(l1=l1, l2=l2, decay_bias=decay_bias)
