"""Regularising layers that drop at random: Dropout (units), Dropout2d (whole channels) and StochasticDepth
(whole rows)."""
import numpy as np

from .. import ops
from .._validate import check_prob as _prob
from .._xp import array_module
from ..layer import Layer
from ._util import _contig, _numel


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014), as nn.Dropout. p is the probability of DROPPING a unit
    (PyTorch/Keras; CS231n's notes use the keep probability 1 - p). Kept units are scaled by 1/(1 - p) and
    eval mode is the identity. The mask comes from ops.dropout_fwd (Philox) under this layer's stream of
    the model's generator: seed from (model seed, layer path), offset advanced once per training forward,
    so a run reproduces exactly. A layer used on its own (outside a model) has seed 0 until
    ``layer.manual_seed(s)`` gives it one."""

    stochastic = True

    def __init__(self, p=0.5, name=None):
        super().__init__(name=name)
        self.p = _prob(type(self).__name__, p)
        self.last_mask = None

    def forward(self, x):
        self._check_inputs(x)
        if not self.training or self.p == 0.0:
            self._cache = (None,)
            return x
        y, mask = ops.dropout_fwd(_contig(x), self.p, self.seed, self.offset)
        self.offset += 1
        self.last_mask = mask
        self._cache = (mask,)
        return y

    def backward(self, dy, need_dx=True):
        (mask,) = self._need_cache(dy)
        if not need_dx:
            return None
        return dy if mask is None else ops.dropout_bwd(_contig(dy), mask, self.p)

    def flops(self, in_shapes, out):
        return _numel(out)

    def config(self):
        return dict(p=self.p)


class Dropout2d(Dropout):
    """Channel dropout, as nn.Dropout2d (Tompson et al. 2015): each (n, c) plane of an (N, C, H, W) input is
    zeroed whole with probability p, the kept ones scaled by 1/(1 - p); eval mode is the identity. The
    (N, C) keep mask comes from ops.dropout_fwd (Philox) under this layer's stream, as Dropout's does;
    ``last_mask`` holds it (uint8, 1 = kept). Dropout's p, stream, flops and config."""

    def output_shape(self, x):
        self._check_rank("Dropout2d", x, (4,), "4-D (N, C, H, W)")
        return tuple(x)

    def forward(self, x):
        self._check_inputs(x)
        if not self.training or self.p == 0.0:
            self._cache = (None,)
            return x
        xp = array_module(x)
        scale, mask = ops.dropout_fwd(xp.ones(x.shape[:2], dtype=x.dtype), self.p, self.seed, self.offset)
        self.offset += 1
        self.last_mask = mask
        scale = scale[:, :, None, None]     # mask / (1 - p) per plane
        self._cache = (scale,)
        return x * scale

    def backward(self, dy, need_dx=True):
        (scale,) = self._need_cache(dy)
        if not need_dx:
            return None
        return dy if scale is None else dy * scale


class StochasticDepth(Layer):
    """Drops a whole residual branch while training (Huang et al. 2016, "Deep Networks with Stochastic
    Depth"), with torchvision.ops.stochastic_depth semantics: p is the probability of dropping (survival
    probability 1 - p); mode "row" draws one keep/drop per sample, "batch" one for the whole batch; kept
    branches are scaled by 1/(1 - p) (not when p = 1); eval mode, or p = 0, is the identity. Put it on the
    branch before the residual Add. The draw comes from this layer's stream of the model's generator."""

    stochastic = True

    def __init__(self, p, mode="row", name=None):
        super().__init__(name=name)
        self.p = _prob("StochasticDepth", p, hi_inclusive=True)
        if mode not in ("row", "batch"):
            raise ValueError(f"StochasticDepth: mode must be 'row' or 'batch', got {mode!r}")
        self.mode = mode
        self.last_noise = None

    def forward(self, x):
        self._check_inputs(x)
        if not self.training or self.p == 0.0:
            self._cache = (None,)
            return x
        xp = array_module(x)
        size = (x.shape[0],) + (1,) * (x.ndim - 1) if self.mode == "row" else (1,) * x.ndim
        u = np.random.default_rng([self.seed, self.offset]).random(size)
        self.offset += 1
        survival = 1.0 - self.p
        noise = xp.asarray((u < survival).astype(x.dtype))
        if survival > 0.0:
            noise = noise / x.dtype.type(survival)
        self.last_noise = noise
        self._cache = (noise,)
        return x * noise

    def backward(self, dy, need_dx=True):
        (noise,) = self._need_cache(dy)
        if not need_dx:
            return None
        return dy if noise is None else dy * noise

    def config(self):
        return dict(p=self.p, mode=self.mode)


__all__ = ["Dropout", "Dropout2d", "StochasticDepth"]
