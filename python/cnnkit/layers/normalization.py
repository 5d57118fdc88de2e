"""Normalisation: BatchNorm1d / BatchNorm2d and LocalResponseNorm."""
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


__all__ = ["BatchNorm1d", "BatchNorm2d", "LocalResponseNorm"]
