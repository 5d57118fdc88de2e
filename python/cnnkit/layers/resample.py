"""Layers that resize the planes without weights: ZeroPad2d (zeros around the border) and Upsample (nearest)."""
import numbers

import numpy as np

from .._validate import check_int
from .._xp import array_module
from ..layer import Layer
from ._util import _gather2d, _numel, _pair, _scatter2d


class ZeroPad2d(Layer):
    """Zeros around each plane, as torch.nn.ZeroPad2d: padding an int (all four sides) or a 4-tuple
    (left, right, top, bottom), each >= 0. Takes (N, C, H, W) or (C, H, W); backward crops the gradient."""

    def __init__(self, padding, name=None):
        super().__init__(name=name)
        op = "ZeroPad2d"
        if isinstance(padding, (tuple, list)):
            if len(padding) != 4:
                raise ValueError(f"{op}: padding must be an int or a 4-tuple (left, right, top, bottom), got "
                                 f"{tuple(padding)}")
            pad = tuple(check_int(op, "padding", v, minimum=0) for v in padding)
        else:
            pad = (check_int(op, "padding", padding, minimum=0),) * 4
        self.padding = pad

    def output_shape(self, x):
        self._check_rank("ZeroPad2d", x, (3, 4), "3-D (C, H, W) or 4-D (N, C, H, W)")
        left, right, top, bottom = self.padding
        return tuple(x[:-2]) + (x[-2] + top + bottom, x[-1] + left + right)

    def forward(self, x):
        self._check_inputs(x)
        left, right, top, bottom = self.padding
        self._cache = x.shape
        width = ((0, 0),) * (x.ndim - 2) + ((top, bottom), (left, right))
        return array_module(x).pad(x, width)

    def backward(self, dy, need_dx=True):
        xs = self._need_cache(dy)
        if not need_dx:
            return None
        left, _, top, _ = self.padding
        H, W = xs[-2:]
        return array_module(dy).ascontiguousarray(dy[..., top:top + H, left:left + W])

    def flops(self, in_shapes, out):
        return 0

    def config(self):
        return dict(padding=list(self.padding))


def _nearest_index(n_in, n_out, scale_factor):
    """torch's nearest source row of each output row: floor(i * scale) in float32, clamped to n_in - 1, with
    scale = 1 / scale_factor when a scale factor was given, else n_in / n_out."""
    if n_out == n_in:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(1.0 / scale_factor) if scale_factor is not None else np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


class Upsample(Layer):
    """Nearest-neighbour upsampling of (N, C, H, W), as torch.nn.Upsample(mode="nearest"): give ``size``
    (an int or (h, w)) or ``scale_factor`` (a whole number or a pair of them). Output row i reads input row
    floor(i * scale) (torch's float32 rule), so sizes that are not multiples also match torch. Backward sums
    the gradient of the copies of each input cell. Only mode "nearest" is implemented."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None, name=None):
        super().__init__(name=name)
        op = "Upsample"
        if mode != "nearest":
            raise ValueError(f"{op}: mode must be 'nearest' (the only one implemented), got {mode!r}")
        if align_corners is not None:
            raise ValueError(f"{op}: align_corners only applies to the interpolating modes; mode 'nearest' takes "
                             f"align_corners=None, got {align_corners!r}")
        if (size is None) == (scale_factor is None):
            raise ValueError(f"{op}: give exactly one of size and scale_factor, got size={size!r}, "
                             f"scale_factor={scale_factor!r}")
        self.mode = mode
        self.size = None if size is None else _pair(op, "size", size, 1)
        self.scale_factor = None
        if scale_factor is not None:
            sf = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * 2
            if len(sf) != 2 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 1 and
                                       float(v).is_integer() for v in sf):
                raise ValueError(f"{op}: scale_factor must be a whole number >= 1 or a pair of them, got "
                                 f"{scale_factor!r}")
            self.scale_factor = tuple(int(v) for v in sf)

    def output_shape(self, x):
        self._check_rank("Upsample", x, (4,), "4-D (N, C, H, W)")
        if self.size is not None:
            return tuple(x[:2]) + self.size
        return (x[0], x[1], x[2] * self.scale_factor[0], x[3] * self.scale_factor[1])

    def _indices(self, H, W, P, Q):
        sf = self.scale_factor or (None, None)
        return _nearest_index(H, P, sf[0]), _nearest_index(W, Q, sf[1])

    def forward(self, x):
        N, C, P, Q = self._check_inputs(x)
        H, W = x.shape[2:]
        xp = array_module(x)
        ih, iw = (xp.asarray(i) for i in self._indices(H, W, P, Q))
        self._cache = (x.shape, ih, iw)
        return _gather2d(x, ih, iw)

    def backward(self, dy, need_dx=True):
        xs, ih, iw = self._need_cache(dy)
        if not need_dx:
            return None
        return _scatter2d(dy, ih, iw, xs[2], xs[3])

    def flops(self, in_shapes, out):
        return _numel(out)

    def config(self):
        return dict(size=None if self.size is None else list(self.size),
                    scale_factor=None if self.scale_factor is None else list(self.scale_factor), mode=self.mode)


__all__ = ["ZeroPad2d", "Upsample"]
