"""ck.nn: torch.nn's names for a model written the torch way. The layer classes (``ck.nn.Conv2d`` is
``ck.Conv2d``), ck.Module and its containers, and the loss classes.

A loss is called on the model's output (a ck.Tensor, or an array) and the targets (an array) and returns a
recorded Tensor: a scalar for reduction "mean" or "sum" (``loss.item()``, ``loss.backward()``), one value per
sample for "none". Each is torch.nn's, in value and gradient, written as one recorded node whose backward is
the closed-form gradient. The targets get no gradient.

How MultiMarginLoss relates to CS231n's multiclass SVM (``ck.losses.svm_loss``): with p=1 and margin=1,
MultiMarginLoss takes, per sample, sum over j != y of max(0, margin - s_y + s_j) divided by the number of
classes C, then the batch mean; CS231n's SVM is the same sum, not divided by C. So
``svm_loss(s, y) == C * MultiMarginLoss()(s, y)``, and ``MultiMarginLoss(reduction="sum")`` is N / C times
the SVM loss.

An instance of these classes is also a Trainer loss: ``ck.Trainer(model, opt, loss=ck.nn.CrossEntropyLoss())``.
"""
import numbers

import numpy as np

from ._validate import check_float, check_int
from ._xp import array_module, is_device_array
from .autograd import Tensor, lift, record
from .graph import Sequential
from .layer import Layer
from .layers import (AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm1d, BatchNorm2d, Concat, Conv2d, DropConnect,
                     Dropout, Flatten, FractionalMaxPool2d, GlobalAvgPool2d, LeakyReLU, Linear, LocallyConnected2d,
                     LocalResponseNorm, MaxPool2d, ReLU, StochasticDepth)
from .layers import ELU, GELU, Identity, LogSoftmax, PReLU, Sigmoid, SiLU, Softmax, Tanh
from .layers import GroupNorm, InstanceNorm2d, LayerNorm
from .module import Module, ModuleDict, ModuleList
from .parameter import _FLOATS, Parameter

_REDUCTIONS = ("mean", "sum", "none")


def _float_input(op, t):
    if t.data.dtype not in _FLOATS:
        raise TypeError(f"{op}: input must be float32 or float64, got {t.data.dtype}")


def _target_array(op, target, like):
    """The targets as an array on the input's device (a Tensor's data; a host array copied over once)."""
    a = target.data if isinstance(target, Tensor) else target
    if isinstance(a, (list, tuple)):
        a = np.asarray(a)
    if not (isinstance(a, np.ndarray) or is_device_array(a)):
        raise TypeError(f"{op}: target must be an array or a ck.Tensor, got {type(target).__name__}")
    if is_device_array(like) and not is_device_array(a):
        a = array_module(like).asarray(a)
    elif is_device_array(a) and not is_device_array(like):
        raise TypeError(f"{op}: target is on the GPU and input on the CPU; put both on one device")
    return a


def _weight(op, weight, C, dtype):
    if weight is None:
        return None
    w = weight.data if isinstance(weight, (Tensor, Parameter)) else weight
    if not (isinstance(w, np.ndarray) or is_device_array(w)) or w.ndim != 1 or w.shape[0] != C:
        raise ValueError(f"{op}: weight must be a 1-D array with one value per class ({C}), got "
                         f"{getattr(w, 'shape', type(w).__name__)}")
    return w.astype(dtype, copy=False)


def _labels(op, y, N, C, ignore_index=None):
    """Class-index targets: integer, shape (N,), each in [0, C) or equal to ignore_index (checked on the host for
    a host array; a device array's range is read back once)."""
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {y.dtype} (class probabilities "
                        f"as targets are not supported)")
    if y.ndim != 1 or y.shape[0] != N:
        raise ValueError(f"{op}: target must be 1-D with one class index per row of input ({N}), got shape "
                         f"{tuple(y.shape)}")
    keep = y if ignore_index is None else y[y != ignore_index]
    if keep.size:
        lo, hi = int(keep.min()), int(keep.max())
        if lo < 0 or hi >= C:
            extra = "" if ignore_index is None else f" (or ignore_index={ignore_index})"
            raise ValueError(f"{op}: target class indices must be in [0, {C}){extra}, got range [{lo}, {hi}]")
    return y


class _Loss(Layer):
    """Base of the loss classes: the reduction, and use as a Trainer loss."""

    _by_config = False

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction

    def __call__(self, input, target):  # noqa: A002 (torch's name)
        op = type(self).__name__
        x = lift(input, op, "input")
        _float_input(op, x)
        return self._loss(op, x, _target_array(op, target, x.data))

    forward = __call__

    def _reduce(self, per, denom=None):
        """(value, scale): the reduced loss of the per-sample (or per-element) losses and the factor by which
        each one's gradient is multiplied."""
        if self.reduction == "none":
            return per, None
        s = per.sum()
        if self.reduction == "sum":
            return s, 1.0
        d = per.size if denom is None else denom
        return s / d, 1.0 / d

    def _trainer_loss(self, scores, y):
        """As a Trainer loss: (value, dscores) for a batch of scores (a float on the CPU, a 0-d array on a GPU)."""
        if self.reduction == "none":
            raise ValueError(f"{type(self).__name__}: a Trainer loss must reduce to one value; use reduction='mean' "
                             f"or 'sum', got 'none'")
        leaf = Tensor(scores, requires_grad=True)
        out = self(leaf, y)
        out.backward()
        v = out.data
        return (v if is_device_array(v) else float(v)), leaf.grad

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


def _grad_bwd(saved, g, needs):
    """Backward of a loss whose gradient was formed in forward: `d` is d(loss)/d(input) for an upstream 1,
    `per_row` says whether an unreduced loss has one value per row (classification) or per element."""
    d, per_row = saved
    if g.ndim == 0:
        return (d * g,)
    return (d * (g[:, None] if per_row else g),)


def _scaled(d, scale):
    return d if scale is None else d * d.dtype.type(scale)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy, as torch.nn.CrossEntropyLoss: input (N, C) scores, target (N,) class indices.
    weight (C,) rescales each class; targets equal to ignore_index count for nothing (nor in the mean's
    denominator, which with weights is the sum of the targets' weights); label_smoothing eps mixes the target
    with the uniform distribution: (1 - eps) * one_hot + eps / C."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        op = "CrossEntropyLoss"
        self.weight = weight
        self.ignore_index = check_int(op, "ignore_index", ignore_index)
        self.label_smoothing = check_float(op, "label_smoothing", label_smoothing, lo=0, hi=1)

    def _loss(self, op, x, y):
        s = x.data
        if s.ndim != 2:
            raise ValueError(f"{op}: input must be 2-D (N, classes), got shape {tuple(s.shape)}")
        N, C = s.shape
        xp = array_module(s)
        y = _labels(op, y, N, C, self.ignore_index)
        w = _weight(op, self.weight, C, s.dtype)
        t = s.dtype.type
        keep = y != self.ignore_index
        yk = xp.where(keep, y, 0)
        rows = xp.arange(N)
        shifted = s - s.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        wy = (w[yk] if w is not None else xp.ones(N, dtype=s.dtype)) * keep.astype(s.dtype)
        eps = self.label_smoothing
        # d(loss_i)/d(logp_i) = -((1 - eps) w_y one_hot + eps / C * w) for a kept row
        coef = xp.zeros_like(s)
        coef[rows, yk] = -t(1 - eps) * wy
        if eps:
            coef -= t(eps / C) * (w[None, :] if w is not None else t(1)) * keep.astype(s.dtype)[:, None]
        per = (coef * logp).sum(axis=1)
        value, scale = self._reduce(per, wy.sum())
        dlogp = _scaled(coef, scale)
        d = dlogp - xp.exp(logp) * dlogp.sum(axis=1, keepdims=True)
        return record(_grad_bwd, [x], value, (d, True), op)

    def extra_repr(self):
        return (f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}")


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities, as torch.nn.NLLLoss: input (N, C) (a log_softmax output),
    target (N,) class indices; weight and ignore_index as CrossEntropyLoss."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.weight = weight
        self.ignore_index = check_int("NLLLoss", "ignore_index", ignore_index)

    def _loss(self, op, x, y):
        s = x.data
        if s.ndim != 2:
            raise ValueError(f"{op}: input must be 2-D (N, classes), got shape {tuple(s.shape)}")
        N, C = s.shape
        xp = array_module(s)
        y = _labels(op, y, N, C, self.ignore_index)
        w = _weight(op, self.weight, C, s.dtype)
        keep = y != self.ignore_index
        yk = xp.where(keep, y, 0)
        rows = xp.arange(N)
        wy = (w[yk] if w is not None else xp.ones(N, dtype=s.dtype)) * keep.astype(s.dtype)
        per = -wy * s[rows, yk]
        value, scale = self._reduce(per, wy.sum())
        d = xp.zeros_like(s)
        d[rows, yk] = _scaled(-wy, scale)
        return record(_grad_bwd, [x], value, (d, True), op)


def _pair(op, x, y):
    if tuple(y.shape) != tuple(x.data.shape):
        raise ValueError(f"{op}: target must have the input's shape {tuple(x.data.shape)}, got {tuple(y.shape)}")
    if np.dtype(y.dtype).kind not in "biuf":
        raise TypeError(f"{op}: target must hold real numbers, got dtype {y.dtype}")
    return x.data - y.astype(x.data.dtype, copy=False)


class MSELoss(_Loss):
    """Mean squared error over every element, as torch.nn.MSELoss."""

    def _loss(self, op, x, y):
        diff = _pair(op, x, y)
        value, scale = self._reduce(diff * diff)
        return record(_grad_bwd, [x], value, (_scaled(2 * diff, scale), False), op)


class L1Loss(_Loss):
    """Mean absolute error, as torch.nn.L1Loss (the gradient at a zero difference is 0)."""

    def _loss(self, op, x, y):
        diff = _pair(op, x, y)
        xp = array_module(diff)
        value, scale = self._reduce(xp.abs(diff))
        return record(_grad_bwd, [x], value, (_scaled(xp.sign(diff), scale), False), op)


class SmoothL1Loss(_Loss):
    """Huber-like loss, as torch.nn.SmoothL1Loss: 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta
    (beta = 0 is L1Loss)."""

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = check_float("SmoothL1Loss", "beta", beta, lo=0)

    def _loss(self, op, x, y):
        diff = _pair(op, x, y)
        xp = array_module(diff)
        t = diff.dtype.type
        a = xp.abs(diff)
        if self.beta == 0:
            per, d = a, xp.sign(diff)
        else:
            small = a < t(self.beta)
            per = xp.where(small, t(0.5) * diff * diff / t(self.beta), a - t(0.5 * self.beta))
            d = xp.where(small, diff / t(self.beta), xp.sign(diff))
        value, scale = self._reduce(per)
        return record(_grad_bwd, [x], value, (_scaled(d, scale), False), op)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy on logits, as torch.nn.BCEWithLogitsLoss: target in [0, 1] of the input's shape;
    weight rescales each element (broadcast), pos_weight the positive term of each class (the last axis).
    Stable: written with softplus, never log(sigmoid)."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.weight, self.pos_weight = weight, pos_weight

    def _loss(self, op, x, y):
        s = x.data
        _pair(op, x, y)
        xp = array_module(s)
        t = s.dtype.type
        y = y.astype(s.dtype, copy=False)

        def softplus(z):
            return xp.maximum(z, t(0)) + xp.log1p(xp.exp(-xp.abs(z)))

        sig = xp.where(s >= 0, t(1) / (1 + xp.exp(-s)), xp.exp(s) / (1 + xp.exp(s)))
        pw = None if self.pos_weight is None else xp.asarray(getattr(self.pos_weight, "data", self.pos_weight),
                                                              dtype=s.dtype)
        pos = y if pw is None else pw * y
        per = pos * softplus(-s) + (1 - y) * softplus(s)
        d = (1 - y) * sig - pos * (1 - sig)
        if self.weight is not None:
            w = xp.asarray(getattr(self.weight, "data", self.weight), dtype=s.dtype)
            per, d = per * w, d * w
        value, scale = self._reduce(per)
        return record(_grad_bwd, [x], value, (_scaled(d, scale), False), op)


class MultiMarginLoss(_Loss):
    """Multiclass hinge loss, as torch.nn.MultiMarginLoss: per sample, sum over j != y of
    w_y * max(0, margin - s_y + s_j)^p, divided by the number of classes C. p is 1 or 2. See the module
    docstring for how it relates to CS231n's SVM loss."""

    def __init__(self, p=1, margin=1.0, weight=None, reduction="mean"):
        super().__init__(reduction)
        if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p not in (1, 2):
            raise ValueError(f"MultiMarginLoss: p must be 1 or 2, got {p!r}")
        self.p = int(p)
        self.margin = check_float("MultiMarginLoss", "margin", margin)
        self.weight = weight

    def _loss(self, op, x, y):
        s = x.data
        if s.ndim != 2:
            raise ValueError(f"{op}: input must be 2-D (N, classes), got shape {tuple(s.shape)}")
        N, C = s.shape
        xp = array_module(s)
        y = _labels(op, y, N, C)
        w = _weight(op, self.weight, C, s.dtype)
        t = s.dtype.type
        rows = xp.arange(N)
        z = t(self.margin) - s[rows, y][:, None] + s
        z[rows, y] = 0
        active = z > 0
        h = xp.where(active, z if self.p == 1 else z * z, t(0))
        dz = xp.where(active, t(1) if self.p == 1 else 2 * z, t(0))
        if w is not None:
            h, dz = h * w[y][:, None], dz * w[y][:, None]
        per = h.sum(axis=1) / t(C)
        dz = dz / t(C)
        value, scale = self._reduce(per)
        d = dz.copy()
        d[rows, y] = -dz.sum(axis=1)
        return record(_grad_bwd, [x], value, (_scaled(d, scale), True), op)

    def extra_repr(self):
        return f"p={self.p}, margin={self.margin}, reduction={self.reduction!r}"


__all__ = ["Module", "ModuleList", "ModuleDict", "Parameter", "Sequential", "Conv2d", "LocallyConnected2d",
           "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "FractionalMaxPool2d", "AdaptiveAvgPool2d", "ReLU",
           "LeakyReLU", "Linear", "DropConnect", "Flatten", "Dropout", "StochasticDepth", "BatchNorm1d",
           "BatchNorm2d", "LocalResponseNorm", "Add", "Concat", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss",
           "SmoothL1Loss", "BCEWithLogitsLoss", "MultiMarginLoss"]
__all__ += ["Tanh", "Sigmoid", "SiLU", "ELU", "GELU", "Softmax", "LogSoftmax", "Identity", "PReLU"]
__all__ += ["LayerNorm", "GroupNorm", "InstanceNorm2d"]

# torch.nn layers that change the spatial size
from .layers import AdaptiveMaxPool2d, ConvTranspose2d, Dropout2d, Upsample, ZeroPad2d  # noqa: E402

__all__ += ["ConvTranspose2d", "ZeroPad2d", "Upsample", "Dropout2d", "AdaptiveMaxPool2d"]
