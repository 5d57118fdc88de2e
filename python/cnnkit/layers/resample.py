"""Layers that resize the planes without weights: ZeroPad2d (zeros around the border) and Upsample (nearest
and bilinear)."""
import functools
import numbers

import numpy as np

from .._validate import check_flag, check_int
from .._xp import array_module, device_of
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


@functools.lru_cache(maxsize=64)
def _linear_matrix(n_in, n_out, align_corners, scale_factor):
    """The (n_out, n_in) float64 matrix of torch's linear interpolation along one axis: output row i reads
    source position src = i * (n_in - 1) / (n_out - 1) with align_corners (0 for one output row), else
    (i + 0.5) * scale - 0.5 clamped at 0, scale = 1 / scale_factor when a scale factor was given, else
    n_in / n_out; it weighs rows floor(src) and floor(src) + 1 (the last row alone at the far edge) by
    1 - frac and frac. Each row sums to 1. Read-only: it is shared by every call with this geometry."""
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        scale = 1.0 / scale_factor if scale_factor is not None else n_in / n_out
        src = np.maximum((i + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    frac = np.clip(src - i0, 0.0, 1.0)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - frac)
    np.add.at(m, (rows, i1), frac)
    m.flags.writeable = False
    return m


_MODES = ("nearest", "bilinear")


class Upsample(Layer):
    """Upsampling of (N, C, H, W), as torch.nn.Upsample with mode "nearest" or "bilinear": give ``size``
    (an int or (h, w), smaller than the input too) or ``scale_factor`` (a whole number or a pair of them).

    nearest: output row i reads input row floor(i * scale) (torch's float32 rule), so sizes that are not
    multiples also match torch; backward sums the gradient of the copies of each input cell.
    bilinear: torch's source positions and weights for either ``align_corners`` (default False), held as
    the interpolation matrices Ah (Ho, H) and Aw (Wo, W) of the geometry, built once per shape; forward is
    y = Ah x Aw^T and backward dx = Ah^T dy Aw, two matrix products per plane on numpy or CuPy alike.
    ``align_corners`` must stay None with mode "nearest", as torch requires."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None, name=None):
        super().__init__(name=name)
        op = name if isinstance(name, str) and name.startswith("F.") else "Upsample"   # F.interpolate's own name
        if mode not in _MODES:
            raise ValueError(f"{op}: mode must be 'nearest' or 'bilinear', got {mode!r}")
        if mode == "nearest":
            if align_corners is not None:
                raise ValueError(f"{op}: align_corners only applies to the interpolating modes; mode 'nearest' "
                                 f"takes align_corners=None, got {align_corners!r}")
        else:
            align_corners = False if align_corners is None else check_flag(op, "align_corners", align_corners)
        if (size is None) == (scale_factor is None):
            raise ValueError(f"{op}: give exactly one of size and scale_factor, got size={size!r}, "
                             f"scale_factor={scale_factor!r}")
        self._op, self.mode = op, mode
        self.align_corners = align_corners
        self.size = None if size is None else _pair(op, "size", size, 1)
        self.scale_factor = None
        if scale_factor is not None:
            sf = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * 2
            if len(sf) != 2 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 1 and
                                       float(v).is_integer() for v in sf):
                raise ValueError(f"{op}: scale_factor must be a whole number >= 1 or a pair of them, got "
                                 f"{scale_factor!r}")
            self.scale_factor = tuple(int(v) for v in sf)
        self._mats = None       # (key, Ah, Aw^T) of the last geometry, in its dtype and on its device

    def output_shape(self, x):
        self._check_rank(self._op, x, (4,), "4-D (N, C, H, W)")
        if self.size is not None:
            return tuple(x[:2]) + self.size
        return (x[0], x[1], x[2] * self.scale_factor[0], x[3] * self.scale_factor[1])

    def _indices(self, H, W, P, Q):
        sf = self.scale_factor or (None, None)
        return _nearest_index(H, P, sf[0]), _nearest_index(W, Q, sf[1])

    def _matrices(self, x, P, Q):
        H, W = x.shape[2:]
        key = (H, W, P, Q, x.dtype.str, device_of(x))
        if self._mats is None or self._mats[0] != key:
            sf = self.scale_factor or (None, None)
            xp = array_module(x)
            ah = _linear_matrix(H, P, self.align_corners, sf[0])
            aw = _linear_matrix(W, Q, self.align_corners, sf[1])
            self._mats = (key, xp.asarray(ah, dtype=x.dtype), xp.ascontiguousarray(xp.asarray(aw.T, dtype=x.dtype)))
        return self._mats[1], self._mats[2]

    def forward(self, x):
        N, C, P, Q = self._check_inputs(x)
        H, W = x.shape[2:]
        xp = array_module(x)
        if self.mode == "bilinear":
            ah, awt = self._matrices(x, P, Q)
            self._cache = (x.shape, ah, awt)
            t = xp.matmul(x.reshape(N * C * H, W), awt).reshape(N * C, H, Q)
            return xp.ascontiguousarray(xp.matmul(ah, t).reshape(N, C, P, Q))
        ih, iw = (xp.asarray(i) for i in self._indices(H, W, P, Q))
        self._cache = (x.shape, ih, iw)
        return _gather2d(x, ih, iw)

    def backward(self, dy, need_dx=True):
        xs, a, b = self._need_cache(dy)
        if not need_dx:
            return None
        if self.mode == "bilinear":
            xp = array_module(dy)
            N, C, H, W = xs
            P, Q = dy.shape[2:]
            t = xp.matmul(a.T, dy.reshape(N * C, P, Q))                       # (N*C, H, Q)
            return xp.ascontiguousarray(xp.matmul(t.reshape(N * C * H, Q), b.T).reshape(xs))
        return _scatter2d(dy, a, b, xs[2], xs[3])

    def flops(self, in_shapes, out):
        return _numel(out) if self.mode == "nearest" else 4 * _numel(out)

    def config(self):
        return dict(size=None if self.size is None else list(self.size),
                    scale_factor=None if self.scale_factor is None else list(self.scale_factor), mode=self.mode,
                    align_corners=self.align_corners)


__all__ = ["ZeroPad2d", "Upsample"]
