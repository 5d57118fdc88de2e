"""Activations: ReLU (the ops kernels) and LeakyReLU."""
from .. import ops
from .._validate import check_float
from .._xp import array_module
from ..layer import Layer
from ._util import _contig, _numel


class ReLU(Layer):
    """max(x, 0); NaN propagates. Kernel: ops.relu_*. The gradient at x = 0 is 0, as torch."""

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


__all__ = ["ReLU", "LeakyReLU"]
