"""Normalisation: BatchNorm1d / BatchNorm2d, LocalResponseNorm, and the per-sample ones LayerNorm, GroupNorm and
InstanceNorm2d."""
import numbers

import numpy as np

from .. import ops
from .._validate import (check_flag as _flag, check_float, check_float_dtype as _dtype,
                         check_positive_int as _positive_int)
from .._xp import array_module
from ..layer import Layer
from ._util import _contig, _numel


class _BatchNorm(Layer):
    """Batch normalisation (Ioffe & Szegedy 2015) with torch.nn.BatchNorm semantics: training normalises
    with the batch mean and biased variance; running_var is updated with the unbiased one;
    running = (1 - momentum) * running + momentum * batch, or a cumulative average when momentum is None;
    eval mode uses the running statistics. Buffers: running_mean, running_var, num_batches_tracked."""

    _ranks = (4,)
    _rank_text = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=np.float32, name=None):
        super().__init__(name=name)
        op = type(self).__name__
        self.num_features = _positive_int(op, "num_features", num_features)
        self.eps = check_float(op, "eps", eps, lo=0)
        self.momentum = None if momentum is None else check_float(op, "momentum", momentum, lo=0, hi=1)
        self.affine = _flag(op, "affine", affine)
        self.track_running_stats = _flag(op, "track_running_stats", track_running_stats)
        dtype = _dtype(op, dtype)
        self._dt = dtype
        if affine:
            self.add_parameter("weight", np.ones(num_features, dtype=dtype))
            self.add_parameter("bias", np.zeros(num_features, dtype=dtype))
        if track_running_stats:
            self.add_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.add_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.add_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))

    def output_shape(self, x):
        op = type(self).__name__
        self._check_rank(op, x, self._ranks, self._rank_text)
        if x[1] != self.num_features:
            raise ValueError(f"{op}: expects {self.num_features} features (channels), got shape {tuple(x)}")
        return tuple(x)

    def forward(self, x):
        # One path for both devices, through the ops: float64 moments, then y = x * alpha + beta (torch's CPU
        # transform).
        self._check_inputs(x)
        x = _contig(x)
        xp = array_module(x)
        use_batch = self.training or not self.track_running_stats
        t = x.dtype.type
        if use_batch:
            mean, var = self._batch_stats(x)
        else:
            mean = xp.ascontiguousarray(self._buffers["running_mean"], dtype=x.dtype)
            var = xp.ascontiguousarray(self._buffers["running_var"], dtype=x.dtype)
        invstd = (t(1) / xp.sqrt(var + t(self.eps))).astype(x.dtype)
        alpha = invstd * self.weight.data if self.affine else invstd
        beta = (self.bias.data - mean * alpha) if self.affine else -mean * alpha
        y = ops.channel_affine(x, xp.ascontiguousarray(alpha), xp.ascontiguousarray(beta))
        self._cache = (x, mean, invstd, use_batch)
        return y

    def _batch_stats(self, x):
        """Batch mean and biased variance; updates the running statistics in training (torch's rule)."""
        m = x.size // x.shape[1]
        if m < 2:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when training, "
                             f"got input shape {tuple(x.shape)}")
        mean, var = ops.batchnorm_stats(x)
        self._update_running(mean, var, m, x.dtype.type)
        return mean, var

    def _update_running(self, mean, var, m, t):
        """torch's running statistics in training: (1 - f) * running + f * batch, the variance unbiased; f is
        the momentum, or 1 / batches seen when momentum is None (a cumulative average)."""
        if not (self.training and self.track_running_stats):
            return
        nbt = self._buffers["num_batches_tracked"]
        nbt += 1
        rm, rv = self._buffers["running_mean"], self._buffers["running_var"]
        xp = array_module(rm)
        f = 1.0 / nbt if self.momentum is None else self.momentum   # a 0-d array on a GPU: no host read
        keep, take = xp.asarray(1.0 - f, dtype=rm.dtype), xp.asarray(f, dtype=rm.dtype)
        rm *= keep
        rm += take * mean.astype(rm.dtype)
        rv *= keep
        rv += take * (var * t(m / (m - 1))).astype(rv.dtype)

    def backward(self, dy, need_dx=True):
        x, mean, invstd, use_batch = self._need_cache(dy)
        w = self.weight.data if self.affine else None
        dx, sum_dy, dotp = ops.batchnorm_bwd(_contig(dy), x, mean, invstd, w, use_batch, need_dx)
        if self.affine:
            if self.weight.requires_grad:
                self.weight.grad += (dotp * invstd).astype(self.weight.grad.dtype)
            if self.bias.requires_grad:
                self.bias.grad += sum_dy.astype(self.bias.grad.dtype)
        return dx

    def flops(self, in_shapes, out):
        return 4 * _numel(out)

    def config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum, affine=self.affine,
                    track_running_stats=self.track_running_stats, dtype=str(self._dtype_now()))

    def _dtype_now(self):
        for a in [p.data for p in self._params.values()] + [self._buffers.get("running_mean")]:
            if a is not None:
                return a.dtype
        return np.dtype(self._dt)


class BatchNorm1d(_BatchNorm):
    """BatchNorm over (N, C) or (N, C, L) inputs, as nn.BatchNorm1d."""
    _ranks = (2, 3)
    _rank_text = "2-D (N, C) or 3-D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """BatchNorm over (N, C, H, W) inputs, per channel, as nn.BatchNorm2d."""
    _ranks = (4,)
    _rank_text = "4-D (N, C, H, W)"


# Sums a float64 array over the data-parallel ranks in place; cnnkit.distributed.init() sets it. None: one
# process, where SyncBatchNorm is BatchNorm.
_sync_reduce = None


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the whole batch across the data-parallel ranks, as
    torch.nn.SyncBatchNorm: the forward all-reduces the per-channel sums (the mean, then the squared
    deviations from it: two passes, as exact as one process), the backward the two per-channel sums its
    input gradient needs. The weight and bias gradients stay local (the gradient all-reduce averages them).
    Inputs (N, C), (N, C, L) or (N, C, H, W). Without cnnkit.distributed.init() it is BatchNorm.
    ``ck.distributed.convert_sync_batchnorm(model)`` converts a model's BatchNorm layers."""

    _ranks = (2, 3, 4)
    _rank_text = "2-D (N, C), 3-D (N, C, L) or 4-D (N, C, H, W)"

    @staticmethod
    def _axes(x):
        return (0,) + tuple(range(2, x.ndim))

    def _shape(self, x):
        return (1, x.shape[1]) + (1,) * (x.ndim - 2)

    def _batch_stats(self, x):
        reduce = _sync_reduce
        if reduce is None:
            return super()._batch_stats(x)
        xp = array_module(x)
        C, axes = x.shape[1], self._axes(x)
        s = xp.empty(C + 1, dtype=np.float64)
        s[:C] = x.sum(axis=axes, dtype=np.float64)
        s[C] = x.size // C
        reduce(s)
        m = int(s[C])
        if m < 2:
            raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel over all ranks when training, "
                             f"got input shape {tuple(x.shape)}")
        mean = s[:C] / m
        d = x - mean.astype(x.dtype).reshape(self._shape(x))
        q = xp.ascontiguousarray((d * d).sum(axis=axes, dtype=np.float64))
        reduce(q)
        mean, var = mean.astype(x.dtype), (q / m).astype(x.dtype)
        self._m_total = m
        self._update_running(mean, var, m, x.dtype.type)
        return mean, var

    def backward(self, dy, need_dx=True):
        if _sync_reduce is None or self._cache is None or not self._cache[3]:   # not synced: BatchNorm's own
            return super().backward(dy, need_dx)
        x, mean, invstd, use_batch = self._need_cache(dy)
        # dy is (N, C, ...); the input gradient of y = (x - mean) * invstd * w + b over the global batch of M:
        # dx = w * invstd * (dy - sum(dy) / M - (x - mean) * invstd^2 * sum(dy * (x - mean)) / M), sums global.
        xp = array_module(dy)
        dy = _contig(dy)
        C, axes, shape = x.shape[1], self._axes(x), self._shape(x)
        xmu = x - mean.reshape(shape)
        s = xp.empty(2 * C, dtype=np.float64)
        s[:C] = dy.sum(axis=axes, dtype=np.float64)
        s[C:] = (dy * xmu).sum(axis=axes, dtype=np.float64)
        if self.affine:
            if self.weight.requires_grad:
                self.weight.grad += (s[C:] * invstd).astype(self.weight.grad.dtype)
            if self.bias.requires_grad:
                self.bias.grad += s[:C].astype(self.bias.grad.dtype)
        if not need_dx:
            return None
        _sync_reduce(s)
        m = self._m_total
        scale = invstd * self.weight.data if self.affine else invstd
        mean_dy = (s[:C] / m).astype(x.dtype).reshape(shape)
        proj = (s[C:] / m).astype(x.dtype) * invstd * invstd
        return (dy - mean_dy - xmu * proj.reshape(shape)) * scale.reshape(shape)


class LocalResponseNorm(Layer):
    """Local response normalisation across channels (Krizhevsky et al. 2012), as nn.LocalResponseNorm:
    b_c = a_c / (k + alpha / n * sum_{c' in window(c)} a_c'^2)^beta, with the window c - n//2 .. c + (n-1)//2
    (zero outside). Note alpha is divided by the window size n (PyTorch and Caffe; the AlexNet paper is not)."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, name=None):
        super().__init__(name=name)
        self.size = _positive_int("LocalResponseNorm", "size", size)
        op = "LocalResponseNorm"
        self.alpha, self.beta = check_float(op, "alpha", alpha, lo=0), check_float(op, "beta", beta)
        self.k = check_float(op, "k", k, lo=0)

    def output_shape(self, x):
        self._check_rank("LocalResponseNorm", x, (4,), "4-D (N, C, H, W)")
        return tuple(x)

    def _window_sum(self, xp, a, lead):
        # sum over the channel window: a zero-padded copy summed at `size` shifts
        N, C = a.shape[:2]
        pad = xp.zeros((N, C + self.size - 1) + a.shape[2:], dtype=a.dtype)
        pad[:, lead:lead + C] = a
        s = xp.zeros_like(a)
        for o in range(self.size):
            s += pad[:, o:o + C]
        return s

    def forward(self, x):
        self._check_inputs(x)
        xp = array_module(x)
        t = x.dtype.type
        div = self._window_sum(xp, x * x, self.size // 2) / t(self.size) * t(self.alpha) + t(self.k)
        y = x / div ** t(self.beta)
        self._cache = (x, div)
        return y

    def backward(self, dy, need_dx=True):
        x, div = self._need_cache(dy)
        if not need_dx:
            return None
        xp = array_module(dy)
        t = dy.dtype.type
        tc = dy * x * div ** t(-self.beta - 1.0)
        T = self._window_sum(xp, tc, (self.size - 1) // 2)   # sum over the windows that contain channel j
        return dy * div ** t(-self.beta) - t(2.0 * self.alpha * self.beta / self.size) * x * T

    def flops(self, in_shapes, out):
        return (self.size + 6) * _numel(out)

    def config(self):
        return dict(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)



# ---------------------------------------------------------------- per-sample normalisation
# LayerNorm, GroupNorm and InstanceNorm2d all normalise rows of a 2-D view of the input (a sample's last
# dimensions, a sample's channel group, a sample's channel) with the row's mean and biased variance, the
# statistics of the input itself in training and eval alike (no running statistics), then apply an optional
# elementwise (LayerNorm) or per-channel (GroupNorm, InstanceNorm2d) affine map. One forward and one backward
# serve the three.

def _rows_normalise(xp, x2, eps):
    """(xhat, invstd) for x2 of shape (R, M): xhat = (x - mean) * invstd per row, invstd (R, 1)."""
    t = x2.dtype.type
    d = x2 - x2.mean(axis=1, keepdims=True)
    invstd = t(1) / xp.sqrt((d * d).mean(axis=1, keepdims=True) + t(eps))
    return d * invstd, invstd


def _rows_backward(xhat, invstd, g):
    """The input gradient of the row normalisation, given g = dL/dxhat (all (R, M))."""
    return invstd * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))


class _PerSampleNorm(Layer):
    """The shared forward / backward. A subclass sets ``_rows(shape)`` (the 2-D view) and ``_affine_shape(ndim)``
    (how weight and bias broadcast against the input), and adds "weight" / "bias" when affine."""

    def _setup(self, eps, dtype):
        op = type(self).__name__
        self.eps = check_float(op, "eps", eps, lo=0)
        self._dt = _dtype(op, dtype)

    def _affine_shape(self, ndim):
        raise NotImplementedError

    def _rows(self, shape):
        raise NotImplementedError

    def forward(self, x):
        self._check_inputs(x)
        xp = array_module(x)
        x = _contig(x)
        xhat, invstd = _rows_normalise(xp, x.reshape(self._rows(x.shape)), self.eps)
        xhat = xhat.reshape(x.shape)
        y = xhat
        w, b = self._params.get("weight"), self._params.get("bias")
        if w is not None:
            y = y * w.data.reshape(self._affine_shape(x.ndim))
        if b is not None:
            y = y + b.data.reshape(self._affine_shape(x.ndim))
        self._cache = (xhat, invstd)
        return y

    def backward(self, dy, need_dx=True):
        xhat, invstd = self._need_cache(dy)
        dy = _contig(dy)
        w, b = self._params.get("weight"), self._params.get("bias")
        ashape = self._affine_shape(dy.ndim)
        axes = tuple(i for i, n in enumerate(ashape) if n == 1)   # the axes the parameters broadcast over
        if w is not None and w.requires_grad:
            w.grad += (dy * xhat).sum(axis=axes).reshape(w.grad.shape)
        if b is not None and b.requires_grad:
            b.grad += dy.sum(axis=axes).reshape(b.grad.shape)
        if not need_dx:
            return None
        g = dy * w.data.reshape(ashape) if w is not None else dy
        rows = self._rows(dy.shape)
        return _rows_backward(xhat.reshape(rows), invstd, g.reshape(rows)).reshape(dy.shape)

    def flops(self, in_shapes, out):
        return 8 * _numel(out)

    def _dtype_now(self):
        p = next(iter(self._params.values()), None)
        return p.dtype if p is not None else np.dtype(self._dt)


def _normalized_shape(v):
    bad = ValueError(f"LayerNorm: normalized_shape must be a positive int or a non-empty list of positive ints, "
                     f"got {v!r}")
    dims = [v] if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
    if not isinstance(dims, (list, tuple)) or not dims:
        raise bad
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
            raise bad
    return tuple(int(d) for d in dims)


class LayerNorm(_PerSampleNorm):
    """Layer normalisation (Ba et al. 2016), as nn.LayerNorm: each sample's last len(normalized_shape)
    dimensions, which must equal normalized_shape, normalised by their mean and biased variance; then
    y = xhat * weight + bias elementwise (both of shape normalized_shape) when elementwise_affine; bias=False
    keeps only the weight, as torch."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32, name=None):
        super().__init__(name=name)
        self.normalized_shape = _normalized_shape(normalized_shape)
        self._setup(eps, dtype)
        self.elementwise_affine = _flag("LayerNorm", "elementwise_affine", elementwise_affine)
        self.bias_enabled = _flag("LayerNorm", "bias", bias)
        if self.elementwise_affine:
            self.add_parameter("weight", np.ones(self.normalized_shape, dtype=self._dt))
            if self.bias_enabled:
                self.add_parameter("bias", np.zeros(self.normalized_shape, dtype=self._dt))

    def output_shape(self, x):
        k = len(self.normalized_shape)
        if len(x) < k or tuple(x[len(x) - k:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm: input's last dimensions must be normalized_shape {self.normalized_shape}, "
                             f"got shape {tuple(x)}")
        return tuple(x)

    def _rows(self, shape):
        m = _numel(self.normalized_shape)
        return (_numel(shape) // m, m)

    def _affine_shape(self, ndim):
        return (1,) * (ndim - len(self.normalized_shape)) + self.normalized_shape

    def config(self):
        return dict(normalized_shape=list(self.normalized_shape), eps=self.eps,
                    elementwise_affine=self.elementwise_affine, bias=self.bias_enabled, dtype=str(self._dtype_now()))


class _ChannelNorm(_PerSampleNorm):
    """Normalisation over channel groups of an (N, C, ...) input: ``num_groups`` rows per sample, and a
    per-channel affine map (weight[c], bias[c]) when ``affine``."""

    def _add_affine(self, c):
        if self.affine:
            self.add_parameter("weight", np.ones(c, dtype=self._dt))
            self.add_parameter("bias", np.zeros(c, dtype=self._dt))

    def _check_channels(self, x, arg, c):
        if x[1] != c:
            raise ValueError(f"{type(self).__name__}: expects {arg} = {c} channels (input dimension 1), got shape "
                             f"{tuple(x)}")

    def _rows(self, shape):
        r = shape[0] * self.num_groups
        return (r, _numel(shape) // r)

    def _affine_shape(self, ndim):
        return (1, -1) + (1,) * (ndim - 2)


class GroupNorm(_ChannelNorm):
    """Group normalisation (Wu & He 2018), as nn.GroupNorm: the channels of an (N, C, ...) input split into
    num_groups groups of C / num_groups; each sample's group normalised by its mean and biased variance; then
    a per-channel y = xhat * weight[c] + bias[c] when affine."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32, name=None):
        super().__init__(name=name)
        self.num_groups = _positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = _positive_int("GroupNorm", "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels ({self.num_channels}) must be divisible by num_groups "
                             f"({self.num_groups})")
        self._setup(eps, dtype)
        self.affine = _flag("GroupNorm", "affine", affine)
        self._add_affine(self.num_channels)

    def output_shape(self, x):
        if len(x) < 2:
            raise ValueError(f"GroupNorm: input must be at least 2-D (N, C, ...), got shape {tuple(x)}")
        self._check_channels(x, "num_channels", self.num_channels)
        return tuple(x)

    def config(self):
        return dict(num_groups=self.num_groups, num_channels=self.num_channels, eps=self.eps, affine=self.affine,
                    dtype=str(self._dtype_now()))


class InstanceNorm2d(_ChannelNorm):
    """Instance normalisation (Ulyanov et al. 2016), as nn.InstanceNorm2d: each sample's channel of an
    (N, C, H, W) input normalised over H, W by its own mean and biased variance (GroupNorm with one group per
    channel); per-channel weight and bias when affine (off by default, as torch). Running statistics
    (track_running_stats=True) are not supported; momentum is accepted for torch's signature and only used
    with them, so it is checked and kept but has no effect."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False,
                 dtype=np.float32, name=None):
        super().__init__(name=name)
        op = "InstanceNorm2d"
        self.num_features = self.num_groups = _positive_int(op, "num_features", num_features)
        self.momentum = None if momentum is None else check_float(op, "momentum", momentum, lo=0, hi=1)
        if _flag(op, "track_running_stats", track_running_stats):
            raise ValueError("InstanceNorm2d: track_running_stats=True is not supported (no running statistics: "
                             "every call normalises with the input's own, in training and eval); got True")
        self._setup(eps, dtype)
        self.affine = _flag(op, "affine", affine)
        self._add_affine(self.num_features)

    def output_shape(self, x):
        self._check_rank("InstanceNorm2d", x, (4,), "4-D (N, C, H, W)")
        self._check_channels(x, "num_features", self.num_features)
        return tuple(x)

    def config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum, affine=self.affine,
                    track_running_stats=False, dtype=str(self._dtype_now()))


__all__ = ["BatchNorm1d", "BatchNorm2d", "LocalResponseNorm", "LayerNorm", "GroupNorm", "InstanceNorm2d"]
