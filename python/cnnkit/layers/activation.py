"""Activations: ReLU (the ops kernels), LeakyReLU, and torch.nn's smooth ones (Tanh, Sigmoid, SiLU, ELU, GELU),
Softmax / LogSoftmax, Identity and PReLU (a learnt slope)."""
import math

import numpy as np

from .. import ops
from .._validate import check_flag, check_float, check_float_dtype, check_int, check_positive_int
from .._xp import array_module
from ..layer import Layer
from ._special import erf
from ._util import _contig, _numel


class ReLU(Layer):
    """max(x, 0); NaN propagates. Kernel: ops.relu_*. The gradient at x = 0 is 0, as torch. ``inplace`` is
    torch's keyword, accepted and ignored: cnnkit always returns a new array (backward needs the output, and
    the input may be another layer's cached value)."""

    def __init__(self, inplace=False, name=None):
        super().__init__(name=name)
        check_flag("ReLU", "inplace", inplace)

    def forward(self, x):
        self._check_inputs(x)
        y = ops.relu_fwd(_contig(x))
        self._cache = y
        return y

    def forward_fused(self, y):
        """The ReLU of a fused Conv2d + ReLU pair: y is already max(conv, 0), so it is passed through and
        kept for the backward pass, exactly as forward would have returned and kept it."""
        self._check_inputs(y)
        self._cache = y
        return y

    def backward(self, dy, need_dx=True):
        y = self._need_cache(dy)
        return ops.relu_bwd(_contig(dy), y) if need_dx else None

    def flops(self, in_shapes, out):
        return _numel(out)


class LeakyReLU(Layer):
    """x if x > 0 else negative_slope * x, as nn.LeakyReLU (default slope 0.01)."""

    def __init__(self, negative_slope=0.01, name=None):
        super().__init__(name=name)
        self.negative_slope = check_float("LeakyReLU", "negative_slope", negative_slope)

    def forward(self, x):
        self._check_inputs(x)
        xp = array_module(x)
        self._cache = x
        return xp.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def backward(self, dy, need_dx=True):
        x = self._need_cache(dy)
        if not need_dx:
            return None
        xp = array_module(dy)
        return xp.where(x > 0, dy, dy * dy.dtype.type(self.negative_slope))

    def flops(self, in_shapes, out):
        return _numel(out)

    def config(self):
        return dict(negative_slope=self.negative_slope)



# ---------------------------------------------------------------- smooth activations, shared with cnnkit.functional
# Each formula is written once, against xp and in the input's dtype; the F ops of the same name run these layers.

def _sigmoid(xp, a):
    """1 / (1 + exp(-a)), stable on both sides: exp is only taken of -|a|."""
    t = a.dtype.type
    e = xp.exp(-xp.abs(a))
    return xp.where(a >= 0, t(1) / (t(1) + e), e / (t(1) + e))


_SQRT_2_PI = math.sqrt(2.0 / math.pi)   # the tanh form's constant
_GELU_C = 0.044715


def _gelu(xp, a, approximate):
    t = a.dtype.type
    if approximate == "tanh":
        return t(0.5) * a * (t(1) + xp.tanh(t(_SQRT_2_PI) * (a + t(_GELU_C) * a * a * a)))
    return t(0.5) * a * (t(1) + erf(a * t(1 / math.sqrt(2.0))))


def _gelu_grad(xp, a, approximate):
    """d gelu / d a."""
    t = a.dtype.type
    if approximate == "tanh":
        k = t(_SQRT_2_PI)
        th = xp.tanh(k * (a + t(_GELU_C) * a * a * a))
        return t(0.5) * (t(1) + th) + t(0.5) * a * (t(1) - th * th) * k * (t(1) + t(3 * _GELU_C) * a * a)
    return (t(0.5) * (t(1) + erf(a * t(1 / math.sqrt(2.0))))
            + a * xp.exp(-a * a / t(2)) * t(1 / math.sqrt(2 * math.pi)))


def _softmax(xp, a, dim, log):
    """softmax (or log-softmax) along dim, the maximum subtracted first."""
    s = a - a.max(axis=dim, keepdims=True)
    lse = xp.log(xp.exp(s).sum(axis=dim, keepdims=True))
    return s - lse if log else xp.exp(s - lse)


def _softmax_grad(xp, y, g, dim, log):
    """The input gradient from the output y and the output gradient g."""
    if log:
        return g - xp.exp(y) * g.sum(axis=dim, keepdims=True)
    return y * (g - (g * y).sum(axis=dim, keepdims=True))


class _Elementwise(Layer):
    """An activation applied to every element; `_cost` forward flops per element for summary()."""

    _cost = 1

    def flops(self, in_shapes, out):
        return self._cost * _numel(out)


class Tanh(_Elementwise):
    """tanh(x), as nn.Tanh; the gradient 1 - y^2 from the output."""

    _cost = 4

    def forward(self, x):
        self._check_inputs(x)
        y = array_module(x).tanh(x)
        self._cache = y
        return y

    def backward(self, dy, need_dx=True):
        y = self._need_cache(dy)
        return dy * (y.dtype.type(1) - y * y) if need_dx else None


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), as nn.Sigmoid (no overflow for large |x|); the gradient y (1 - y) from the output."""

    _cost = 4

    def forward(self, x):
        self._check_inputs(x)
        y = _sigmoid(array_module(x), x)
        self._cache = y
        return y

    def backward(self, dy, need_dx=True):
        y = self._need_cache(dy)
        return dy * y * (y.dtype.type(1) - y) if need_dx else None


class SiLU(_Elementwise):
    """x * sigmoid(x) (swish), as nn.SiLU. ``inplace`` is torch's keyword, accepted and ignored: cnnkit
    always returns a new array."""

    _cost = 5

    def __init__(self, inplace=False, name=None):
        super().__init__(name=name)
        check_flag("SiLU", "inplace", inplace)

    def forward(self, x):
        self._check_inputs(x)
        s = _sigmoid(array_module(x), x)
        self._cache = (x, s)
        return x * s

    def backward(self, dy, need_dx=True):
        x, s = self._need_cache(dy)
        if not need_dx:
            return None
        one = dy.dtype.type(1)
        return dy * s * (one + x * (one - s))


class ELU(_Elementwise):
    """x if x > 0 else alpha * (exp(x) - 1), as nn.ELU (default alpha 1). ``inplace`` is accepted and ignored,
    as in SiLU."""

    _cost = 3

    def __init__(self, alpha=1.0, inplace=False, name=None):
        super().__init__(name=name)
        self.alpha = check_float("ELU", "alpha", alpha)
        check_flag("ELU", "inplace", inplace)

    def forward(self, x):
        self._check_inputs(x)
        xp = array_module(x)
        t = x.dtype.type
        e = xp.expm1(xp.minimum(x, t(0)))       # exp of the negative side only: no overflow for large x
        self._cache = (x, e)
        return xp.where(x > 0, x, t(self.alpha) * e)

    def backward(self, dy, need_dx=True):
        x, e = self._need_cache(dy)
        if not need_dx:
            return None
        t = dy.dtype.type
        return array_module(dy).where(x > 0, dy, dy * (t(self.alpha) * (e + t(1))))

    def config(self):
        return dict(alpha=self.alpha)


_GELU_MODES = ("none", "tanh")


class GELU(_Elementwise):
    """x * Phi(x), as nn.GELU: exact with the error function (approximate="none", a vectorised erf), or
    the tanh form 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) with approximate="tanh"."""

    _cost = 20

    def __init__(self, approximate="none", name=None):
        super().__init__(name=name)
        if not isinstance(approximate, str) or approximate not in _GELU_MODES:
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        self._check_inputs(x)
        self._cache = x
        return _gelu(array_module(x), x, self.approximate)

    def backward(self, dy, need_dx=True):
        x = self._need_cache(dy)
        return dy * _gelu_grad(array_module(dy), x, self.approximate) if need_dx else None

    def config(self):
        return dict(approximate=self.approximate)


class Softmax(Layer):
    """exp(x) / sum(exp(x)) along ``dim``, as nn.Softmax (the maximum is subtracted first). ``dim`` is
    required: torch's implicit choice when it is None is deprecated there and refused here."""

    _log = False

    def __init__(self, dim=None, name=None):
        super().__init__(name=name)
        op = type(self).__name__
        if dim is None:
            raise TypeError(f"{op}: dim is required (the axis to normalise over, e.g. dim=1 for (N, C) scores), "
                            f"got None")
        self.dim = check_int(op, "dim", dim)

    def _axis(self, ndim):
        if not -ndim <= self.dim < ndim:
            raise ValueError(f"{type(self).__name__}: dim must be in [{-ndim}, {ndim - 1}] for a {ndim}-D input, "
                             f"got {self.dim}")
        return self.dim % ndim

    def output_shape(self, x):
        self._axis(len(x))
        return tuple(x)

    def forward(self, x):
        self._check_inputs(x)
        dim = self._axis(x.ndim)
        y = _softmax(array_module(x), x, dim, self._log)
        self._cache = (y, dim)
        return y

    def backward(self, dy, need_dx=True):
        y, dim = self._need_cache(dy)
        return _softmax_grad(array_module(dy), y, dy, dim, self._log) if need_dx else None

    def flops(self, in_shapes, out):
        return 5 * _numel(out)

    def config(self):
        return dict(dim=self.dim)


class LogSoftmax(Softmax):
    """log(softmax(x)) along ``dim``, formed directly (x - max - log sum exp), as nn.LogSoftmax."""

    _log = True


class Identity(Layer):
    """y = x, as nn.Identity; like torch's, it takes any arguments and ignores them (a placeholder)."""

    def __init__(self, *args, name=None, **kwargs):
        super().__init__(name=name)

    def forward(self, x):
        self._check_inputs(x)
        self._cache = True
        return x

    def backward(self, dy, need_dx=True):
        self._need_cache(dy)
        return dy if need_dx else None


class PReLU(Layer):
    """x if x > 0 else a * x with a learnt slope a, as nn.PReLU: one slope (num_parameters=1) shared by every
    element, or one per channel (input dimension 1). Parameter: weight (num_parameters,), initialised to init."""

    def __init__(self, num_parameters=1, init=0.25, dtype=np.float32, name=None):
        super().__init__(name=name)
        self.num_parameters = check_positive_int("PReLU", "num_parameters", num_parameters)
        self.init = check_float("PReLU", "init", init)
        self.add_parameter("weight", np.full(self.num_parameters, self.init, dtype=check_float_dtype("PReLU", dtype)))

    def output_shape(self, x):
        if self.num_parameters > 1 and (len(x) < 2 or x[1] != self.num_parameters):
            raise ValueError(f"PReLU: expects {self.num_parameters} channels (input dimension 1), got shape "
                             f"{tuple(x)}")
        return tuple(x)

    def _slope(self, ndim):
        w = self.weight.data
        return w.reshape((1, -1) + (1,) * (ndim - 2)) if self.num_parameters > 1 else w.reshape(())

    def forward(self, x):
        self._check_inputs(x)
        xp = array_module(x)
        self._cache = x
        return xp.where(x > 0, x, x * self._slope(x.ndim))

    def backward(self, dy, need_dx=True):
        x = self._need_cache(dy)
        xp = array_module(dy)
        pos = x > 0
        w = self.weight
        if w.requires_grad:
            g = xp.where(pos, dy.dtype.type(0), x * dy)
            axes = tuple(i for i in range(x.ndim) if i != 1) if self.num_parameters > 1 else None
            w.grad += g.sum(axis=axes).reshape(w.grad.shape)
        if not need_dx:
            return None
        return xp.where(pos, dy, dy * self._slope(dy.ndim))

    def flops(self, in_shapes, out):
        return _numel(out)

    def config(self):
        return dict(num_parameters=self.num_parameters, init=self.init, dtype=str(self.weight.dtype))


__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "SiLU", "ELU", "GELU", "Softmax", "LogSoftmax", "Identity",
           "PReLU"]
