"""Layers: each is a forward and a backward that sit side by side, with named parameters and a shape rule.

Semantics follow torch.nn (the tests compare every layer with its twin). Convolution, max-pooling, ReLU
and dropout call the kernels in cnnkit.ops; the rest is array glue written against ``xp`` (numpy on the
CPU, CuPy on the GPU). Every forward starts with ``self._check_inputs`` and every backward with ``self._need_cache(dy)``
(graph.Layer): float32/float64 inputs of the parameters' dtype, and a dy of the output's shape and dtype, as the
kernels require. Activation gradients are written (=); parameter gradients accumulate (+=) into ``p.grad``,
read fresh from the Parameter on every call (an optimizer may rebind it to a FlatBuffer view).
"""
import numbers

import numpy as np

from . import init as _init
from . import ops
from ._xp import array_module, is_device_array
from .data._common import check_float   # the one real-number check: a number, finite, within [lo, hi]
from ._validate import check_flag as _flag
from .layer import Layer

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------- helpers

_pair = ops._pair  # (op, name, v, minimum): an int or an (h, w) pair of ints, each >= minimum, else an error naming it


def _cfgpair(v):
    return v[0] if v[0] == v[1] else list(v)


def _conv_padding(op, padding, kernel_size, stride, dilation):
    """padding as torch.nn.Conv2d takes it: an int, an (h, w) pair, "valid" (no padding) or "same" (stride 1
    only; the output keeps the input's size). cnnkit pads both sides equally, so "same" needs an even total
    dilation * (kernel - 1) per axis, i.e. an odd kernel or an even dilation; torch pads one side more."""
    if not isinstance(padding, str):
        return _pair(op, "padding", padding, 0)
    if padding == "valid":
        return (0, 0)
    if padding != "same":
        raise ValueError(f"{op}: padding must be an int, a pair (h, w), 'valid' or 'same', got {padding!r}")
    if stride != (1, 1):
        raise ValueError(f"{op}: padding='same' needs stride 1 (as in torch), got stride {stride}")
    total = tuple(d * (k - 1) for k, d in zip(kernel_size, dilation))
    if any(t % 2 for t in total):
        raise ValueError(f"{op}: padding='same' with kernel_size {kernel_size} and dilation {dilation} needs "
                         f"unequal padding on the two sides ({total} in all), which cnnkit's conv does not do; "
                         f"use an odd kernel size or give the padding explicitly")
    return (total[0] // 2, total[1] // 2)


def _positive_int(op, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    return int(v)


def _prob(op, p, hi_inclusive=False):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: p must be a float, got {type(p).__name__}")
    p = float(p)
    if not (0.0 <= p < 1.0 or (hi_inclusive and p == 1.0)):
        raise ValueError(f"{op}: p (the drop probability) must be in [0, 1{']' if hi_inclusive else ')'}, got {p}")
    return p


def _dtype(op, dtype):
    dtype = np.dtype(dtype)
    if dtype not in _FLOATS:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype}")
    return dtype


def _contig(a):
    return a if a.flags.c_contiguous else array_module(a).ascontiguousarray(a)


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ================================================================ convolution and pooling

class Conv2d(Layer):
    """2-D convolution, as torch.nn.Conv2d: weight (K, C/groups, R, S), bias (K,). Kernel: cnnkit.ops.conv2d_*."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, weight_init="he", bias_init="zeros", seed=None, dtype=np.float32, name=None):
        super().__init__(name=name)
        op = "Conv2d"
        self.in_channels = _positive_int(op, "in_channels", in_channels)
        self.out_channels = _positive_int(op, "out_channels", out_channels)
        self.kernel_size, self.stride = _pair(op, "kernel_size", kernel_size, 1), _pair(op, "stride", stride, 1)
        self.dilation = _pair(op, "dilation", dilation, 1)
        self.padding = _conv_padding(op, padding, self.kernel_size, self.stride, self.dilation)
        self.groups = _positive_int(op, "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{op}: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        self.weight_init, self.bias_init = _init.get(weight_init).spec, _init.get(bias_init).spec
        dtype = _dtype(op, dtype)
        R, S = self.kernel_size
        wshape = (out_channels, in_channels // groups, R, S)
        rng = _init.rng_for(seed)
        fan_in, fan_out = in_channels // groups * R * S, out_channels * R * S
        self.add_parameter("weight", _init.make(weight_init, wshape, fan_in, fan_out, rng, dtype))
        if _flag(op, "bias", bias):
            self.add_parameter("bias", _init.make(bias_init, (out_channels,), fan_in, fan_out, rng, dtype))

    def _hp(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def output_shape(self, x):
        self._check_rank("Conv2d", x, (4,), "4-D (N, C, H, W)")
        if x[1] != self.in_channels:
            raise ValueError(f"Conv2d: expects {self.in_channels} input channels, got shape {tuple(x)}")
        return ops.conv2d_out_shape(tuple(x), self.weight.shape, **self._hp())

    def forward(self, x):
        self._check_inputs(x)
        b = self._params["bias"].data if "bias" in self._params else None
        y = ops.conv2d_fwd(_contig(x), self.weight.data, b, **self._hp())
        self._cache = x
        return y

    def backward(self, dy, need_dx=True):
        x = self._need_cache(dy)
        dy = _contig(dy)
        w = self.weight
        if w.requires_grad:
            ops.conv2d_bwd_weight(dy, _contig(x), w.shape, **self._hp(), out=w.grad, accumulate=True)
        b = self._params.get("bias")
        if b is not None and b.requires_grad:
            ops.conv2d_bwd_bias(dy, out=b.grad, accumulate=True)
        if not need_dx:
            return None
        return ops.conv2d_bwd_data(dy, w.data, x.shape, **self._hp())

    def flops(self, in_shapes, out):
        N, K, P, Q = out
        R, S = self.kernel_size
        bias = N * K * P * Q if "bias" in self._params else 0
        return 2 * N * K * P * Q * (self.in_channels // self.groups) * R * S + bias

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=_cfgpair(self.kernel_size), stride=_cfgpair(self.stride),
                    padding=_cfgpair(self.padding), dilation=_cfgpair(self.dilation), groups=self.groups,
                    bias="bias" in self._params, weight_init=self.weight_init, bias_init=self.bias_init,
                    dtype=str(self.weight.dtype))


class _ArgmaxPool(Layer):
    """Shared by the max-pooling layers: forward caches (indices, x shape); backward scatters through them."""

    def backward(self, dy, need_dx=True):
        idx, xs = self._need_cache(dy)
        return ops.maxpool2d_bwd(_contig(dy), idx, xs) if need_dx else None

    def flops(self, in_shapes, out):
        return _numel(out) * self.kernel_size[0] * self.kernel_size[1]


class MaxPool2d(_ArgmaxPool):
    """Max-pooling with argmax, as torch.nn.MaxPool2d (stride defaults to kernel_size). Kernel: ops.maxpool2d_*."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, name=None):
        super().__init__(name=name)
        op = "MaxPool2d"
        self.kernel_size = _pair(op, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _pair(op, "stride", stride, 1)
        self.padding, self.dilation = _pair(op, "padding", padding, 0), _pair(op, "dilation", dilation, 1)
        self.ceil_mode = _flag(op, "ceil_mode", ceil_mode)

    def _hp(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, ceil_mode=self.ceil_mode)

    def output_shape(self, x):
        self._check_rank("MaxPool2d", x, (4,), "4-D (N, C, H, W)")
        from . import _C
        try:
            return tuple(_C.maxpool2d_out_shape(tuple(x), self.kernel_size, self.stride, self.padding,
                                                self.dilation, self.ceil_mode))
        except ValueError as e:
            raise ValueError(f"MaxPool2d: cannot pool input {tuple(x)}: {e}") from None

    def forward(self, x):
        self._check_inputs(x)
        y, idx = ops.maxpool2d_fwd(_contig(x), self.kernel_size, **self._hp())
        self._cache = (idx, x.shape)
        return y

    def config(self):
        return dict(kernel_size=_cfgpair(self.kernel_size), stride=_cfgpair(self.stride),
                    padding=_cfgpair(self.padding), dilation=_cfgpair(self.dilation), ceil_mode=self.ceil_mode)


class AvgPool2d(Layer):
    """Average pooling, as torch.nn.AvgPool2d with ceil_mode=False. count_include_pad=True divides every
    window by R*S (zeros in the padding count); False divides by the number of real cells."""

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True, name=None):
        super().__init__(name=name)
        op = "AvgPool2d"
        self.kernel_size = _pair(op, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _pair(op, "stride", stride, 1)
        self.padding = _pair(op, "padding", padding, 0)
        self.count_include_pad = _flag(op, "count_include_pad", count_include_pad)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"AvgPool2d: padding must be at most half the kernel size, got padding "
                             f"{self.padding} for kernel {self.kernel_size}")

    def output_shape(self, x):
        self._check_rank("AvgPool2d", x, (4,), "4-D (N, C, H, W)")
        N, C, H, W = x
        (R, S), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        P, Q = (H + 2 * ph - R) // sh + 1, (W + 2 * pw - S) // sw + 1
        if H + 2 * ph < R or W + 2 * pw < S:
            raise ValueError(f"AvgPool2d: kernel {self.kernel_size} larger than the padded input {tuple(x)}")
        return (N, C, P, Q)

    def _windows(self, P, Q):
        (R, S), (sh, sw) = self.kernel_size, self.stride
        for r in range(R):
            for s in range(S):
                yield r, s, slice(r, r + sh * (P - 1) + 1, sh), slice(s, s + sw * (Q - 1) + 1, sw)

    def _divisor(self, xp, H, W, P, Q, dtype):
        R, S = self.kernel_size
        if self.count_include_pad:
            return dtype.type(R * S)
        (ph, pw) = self.padding
        ones = xp.zeros((H + 2 * ph, W + 2 * pw), dtype=dtype)
        ones[ph:ph + H, pw:pw + W] = 1
        cnt = xp.zeros((P, Q), dtype=dtype)
        for _, _, si, sj in self._windows(P, Q):
            cnt += ones[si, sj]
        return cnt

    def forward(self, x):
        N, C, P, Q = self._check_inputs(x)
        xp = array_module(x)
        (ph, pw), H, W = self.padding, x.shape[2], x.shape[3]
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        acc = xp.zeros((N, C, P, Q), dtype=x.dtype)
        for _, _, si, sj in self._windows(P, Q):
            acc += xpad[:, :, si, sj]
        div = self._divisor(xp, H, W, P, Q, x.dtype)
        self._cache = (x.shape, div)
        return acc / div

    def backward(self, dy, need_dx=True):
        xs, div = self._need_cache(dy)
        if not need_dx:
            return None
        xp = array_module(dy)
        N, C, H, W = xs
        (ph, pw) = self.padding
        P, Q = dy.shape[2:]
        g = dy / div
        dxp = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
        for _, _, si, sj in self._windows(P, Q):
            dxp[:, :, si, sj] += g
        return xp.ascontiguousarray(dxp[:, :, ph:ph + H, pw:pw + W])

    def flops(self, in_shapes, out):
        return _numel(out) * self.kernel_size[0] * self.kernel_size[1]

    def config(self):
        return dict(kernel_size=_cfgpair(self.kernel_size), stride=_cfgpair(self.stride),
                    padding=_cfgpair(self.padding), count_include_pad=self.count_include_pad)


class GlobalAvgPool2d(Layer):
    """Mean over each (n, c) plane: (N, C, H, W) -> (N, C, 1, 1), as nn.AdaptiveAvgPool2d(1)."""

    def output_shape(self, x):
        self._check_rank("GlobalAvgPool2d", x, (4,), "4-D (N, C, H, W)")
        return (x[0], x[1], 1, 1)

    def forward(self, x):
        self._check_inputs(x)
        self._cache = x.shape
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, dy, need_dx=True):
        xs = self._need_cache(dy)
        if not need_dx:
            return None
        xp = array_module(dy)
        return xp.ascontiguousarray(xp.broadcast_to(dy / (xs[2] * xs[3]), xs))

    def flops(self, in_shapes, out):
        return _numel(in_shapes[0])


class FractionalMaxPool2d(_ArgmaxPool):
    """Fractional max-pooling (Graham 2014, "Fractional Max-Pooling"), as nn.FractionalMaxPool2d.

    Pseudo-random, overlapping pooling regions: for each (n, c) plane one uniform u per axis gives the
    region starts a_i = int((i + u) * alpha) - int(u * alpha), alpha = (In - k) / (Out - 1), the last at
    In - k (torch's generate_intervals, computed in the input's dtype so the regions agree exactly). u is
    drawn from this layer's stream of the model's generator (seed, offset), a fresh draw per training
    forward. In eval mode the regions are one fixed draw (offset-independent), so evaluation is
    deterministic; Graham also averages several draws at test time, which a user can do by hand.
    ``last_samples`` holds the (N, C, 2) draw ([..., 0] for width, [..., 1] for height), torch's
    ``_random_samples``.
    """

    stochastic = True

    def __init__(self, kernel_size, output_size=None, output_ratio=None, name=None):
        super().__init__(name=name)
        op = "FractionalMaxPool2d"
        self.kernel_size = _pair(op, "kernel_size", kernel_size, 1)
        if (output_size is None) == (output_ratio is None):
            raise ValueError("FractionalMaxPool2d: give exactly one of output_size and output_ratio")
        self.output_size = None if output_size is None else _pair(op, "output_size", output_size, 1)
        self.output_ratio = None
        if output_ratio is not None:
            ratio = tuple(output_ratio) if isinstance(output_ratio, (tuple, list)) else (output_ratio,) * 2
            if len(ratio) != 2:
                raise ValueError(f"{op}: output_ratio must be a number or a pair (h, w), got {ratio}")
            self.output_ratio = tuple(check_float(op, "output_ratio", r) for r in ratio)
        if self.output_ratio is not None and not all(0 < r < 1 for r in self.output_ratio):
            raise ValueError(f"FractionalMaxPool2d: output_ratio must be in (0, 1), got {self.output_ratio}")
        self.last_samples = None

    def output_shape(self, x):
        self._check_rank("FractionalMaxPool2d", x, (4,), "4-D (N, C, H, W)")
        N, C, H, W = x
        if self.output_size is not None:
            P, Q = self.output_size
        else:
            P, Q = int(H * self.output_ratio[0]), int(W * self.output_ratio[1])
        R, S = self.kernel_size
        if P < 1 or Q < 1 or P + R - 1 > H or Q + S - 1 > W:
            raise ValueError(f"FractionalMaxPool2d: output {(P, Q)} with kernel {self.kernel_size} does not fit "
                             f"input {tuple(x)} (need out + k - 1 <= in)")
        return (N, C, P, Q)

    @staticmethod
    def _starts(u, n_in, n_out, k):
        # u: (N, C) in the input dtype -> (N, C, n_out) int64 starts, as torch's generate_intervals
        t = u.dtype.type
        starts = np.empty(u.shape + (n_out,), dtype=np.int64)
        if n_out > 1:
            alpha = t(n_in - k) / t(n_out - 1)
            i = np.arange(n_out - 1, dtype=u.dtype)
            starts[..., :-1] = ((i + u[..., None]) * alpha).astype(np.int64) - (u * alpha).astype(np.int64)[..., None]
        starts[..., -1] = n_in - k
        return starts

    def forward(self, x, samples=None):
        N, C, P, Q = self._check_inputs(x)
        H, W = x.shape[2:]
        R, S = self.kernel_size
        if samples is None:
            off = self.offset if self.training else 2**63
            samples = np.random.default_rng([self.seed, off]).random((N, C, 2)).astype(x.dtype)
            if self.training:
                self.offset += 1
        # the region starts are computed on the host (N*C*(P+Q) numbers, torch's rounding), the gather where x is
        samples = samples.get() if is_device_array(samples) else samples
        samples = np.asarray(samples, dtype=x.dtype)
        self.last_samples = samples
        xp = array_module(x)
        sw = xp.asarray(self._starts(samples[..., 0], W, Q, S))   # (N, C, Q)
        sh = xp.asarray(self._starts(samples[..., 1], H, P, R))   # (N, C, P)
        ih = sh[:, :, :, None, None, None] + xp.arange(R)[:, None]          # (N, C, P, 1, R, 1)
        iw = sw[:, :, None, :, None, None] + xp.arange(S)                  # (N, C, 1, Q, 1, S)
        flat = xp.broadcast_to(ih * W + iw, (N, C, P, Q, R, S)).reshape(N, C, P * Q * R * S)
        vals = xp.take_along_axis(x.reshape(N, C, H * W), flat, axis=2).reshape(N, C, P, Q, R * S)
        arg = vals.argmax(axis=4)   # first maximum in row-major window order, as torch
        y = xp.take_along_axis(vals, arg[..., None], axis=4)[..., 0]
        idx = xp.take_along_axis(flat.reshape(N, C, P, Q, R * S), arg[..., None], axis=4)[..., 0]
        self._cache = (xp.ascontiguousarray(idx), x.shape)
        self.last_indices = self._cache[0]
        return xp.ascontiguousarray(y)

    def config(self):
        return dict(kernel_size=_cfgpair(self.kernel_size),
                    output_size=None if self.output_size is None else list(self.output_size),
                    output_ratio=None if self.output_ratio is None else list(self.output_ratio))


# ================================================================ activations

class ReLU(Layer):
    """max(x, 0); NaN propagates. Kernel: ops.relu_*. The gradient at x = 0 is 0, as torch."""

    def forward(self, x):
        self._check_inputs(x)
        y = ops.relu_fwd(_contig(x))
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


# ================================================================ fully connected

class Linear(Layer):
    """y = x W^T + b, as nn.Linear: weight (out_features, in_features), bias (out_features,). x is (N, in)."""

    def __init__(self, in_features, out_features, bias=True, weight_init="he", bias_init="zeros", seed=None,
                 dtype=np.float32, name=None):
        super().__init__(name=name)
        op = type(self).__name__
        self.in_features = _positive_int(op, "in_features", in_features)
        self.out_features = _positive_int(op, "out_features", out_features)
        self.weight_init, self.bias_init = _init.get(weight_init).spec, _init.get(bias_init).spec
        dtype = _dtype(op, dtype)
        rng = _init.rng_for(seed)
        self.add_parameter("weight", _init.make(weight_init, (out_features, in_features), in_features,
                                                out_features, rng, dtype))
        if _flag(op, "bias", bias):
            self.add_parameter("bias", _init.make(bias_init, (out_features,), in_features, out_features, rng, dtype))

    def output_shape(self, x):
        op = type(self).__name__
        self._check_rank(op, x, (2,), "2-D (N, in_features); put a Flatten before it")
        if x[1] != self.in_features:
            raise ValueError(f"{op}: expects {self.in_features} input features, got shape {tuple(x)}")
        return (x[0], self.out_features)

    def _weight(self):
        return self.weight.data

    # On the CPU the three products run through ops.matmul, cnnkit's GEMM on its own threads: numpy's
    # matmul would wake a second BLAS thread pool, and alternating the two pools cost ~70 ms per call on a
    # 2-core machine. One GEMM split by output rows or columns also beats running
    # the product as a 1x1 convolution over 1x1 planes, whose per-sample GEMMs are only a few columns wide.
    def forward(self, x):
        self._check_inputs(x)
        w = self._weight()
        b = self._params["bias"].data if "bias" in self._params else None
        x = _contig(x)
        y = ops.matmul(x, w, trans_b=True)   # cnnkit's GEMM on the CPU, cuBLAS (through CuPy) on a GPU
        if b is not None:
            y += b
        self._cache = (x, w)
        return y

    def _weight_mask(self):
        return None   # DropConnect: the mask of the weights used in forward

    def backward(self, dy, need_dx=True):
        x, w = self._need_cache(dy)
        dy = _contig(dy)
        mask = self._weight_mask()
        if self.weight.requires_grad:
            if mask is None:
                ops.matmul(dy, x, trans_a=True, out=self.weight.grad, accumulate=True)
            else:
                self.weight.grad += ops.dropout_bwd(ops.matmul(dy, x, trans_a=True), mask, self.p)
        b = self._params.get("bias")
        if b is not None and b.requires_grad:
            b.grad += dy.sum(axis=0)
        if not need_dx:
            return None
        return ops.matmul(dy, w)

    def flops(self, in_shapes, out):
        return 2 * out[0] * self.in_features * self.out_features + (_numel(out) if "bias" in self._params else 0)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias="bias" in self._params,
                    weight_init=self.weight_init, bias_init=self.bias_init, dtype=str(self.weight.dtype))


class DropConnect(Linear):
    """A Linear layer that drops weights instead of activations (Wan et al. 2013, "Regularization of Neural
    Networks using DropConnect").

    While training, each forward call draws one mask M over the weight matrix (shared by the batch) from
    this layer's stream of the model's generator and uses W * M / (1 - p); p is the probability of
    DROPPING a weight. The bias is not dropped. In eval mode the layer uses W, the mean of the masked
    weights (the paper's inference instead moment-matches a Gaussian; the mean is the common shortcut).
    """

    stochastic = True

    def __init__(self, in_features, out_features, p=0.5, bias=True, weight_init="he", bias_init="zeros",
                 seed=None, dtype=np.float32, name=None):
        super().__init__(in_features, out_features, bias, weight_init, bias_init, seed, dtype, name)
        self.p = _prob("DropConnect", p)
        self.last_mask = None

    def _weight(self):
        if not self.training or self.p == 0.0:
            self.last_mask = None
            return self.weight.data
        w, mask = ops.dropout_fwd(self.weight.data, self.p, self.seed, self.offset)
        self.offset += 1
        self.last_mask = mask
        return w

    def forward(self, x):
        y = super().forward(x)
        self._cache = self._cache + (self.last_mask,)
        return y

    def backward(self, dy, need_dx=True):
        x, w, mask = self._need_cache(dy)
        self._cache, self._mask_bwd = (x, w), mask
        return super().backward(dy, need_dx)

    def _weight_mask(self):
        return self._mask_bwd

    def config(self):
        return dict(super().config(), p=self.p)


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), as nn.Flatten()."""

    def output_shape(self, x):
        if len(x) < 2:
            raise ValueError(f"Flatten: input must have a batch dimension and at least one more, got shape {tuple(x)}")
        return (x[0], _numel(x[1:]))

    def forward(self, x):
        self._check_inputs(x)
        self._cache = x.shape
        return _contig(x).reshape(x.shape[0], -1)

    def backward(self, dy, need_dx=True):
        xs = self._need_cache(dy)
        return _contig(dy).reshape(xs) if need_dx else None


# ================================================================ regularisers

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
        self.p = _prob("Dropout", p)
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


# ================================================================ normalisation

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
        self._check_inputs(x)
        xp = array_module(x)
        if xp is np:
            return self._forward_cpu(_contig(x))
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        use_batch = self.training or not self.track_running_stats
        t = x.dtype.type
        if use_batch:
            m = x.size // x.shape[1]
            if m < 2:
                raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when training, "
                                 f"got input shape {tuple(x.shape)}")
            mean = x.mean(axis=axes)
            xc = x - mean.reshape(bshape)
            var = (xc * xc).mean(axis=axes)
            self._update_running(mean, var, m, t)
        else:
            mean, var = self._buffers["running_mean"].astype(x.dtype), self._buffers["running_var"].astype(x.dtype)
            xc = x - mean.reshape(bshape)
        invstd = 1.0 / xp.sqrt(var + t(self.eps))
        xhat = xc * invstd.reshape(bshape)
        y = xhat * self.weight.data.reshape(bshape) + self.bias.data.reshape(bshape) if self.affine else xhat
        self._cache = ("xp", xhat, invstd, use_batch, axes, bshape)
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

    def _forward_cpu(self, x):
        # The fused kernels: float64 moments, then y = x * alpha + beta (torch's CPU transform).
        use_batch = self.training or not self.track_running_stats
        t = x.dtype.type
        if use_batch:
            mean, var = self._batch_stats(x)
        else:
            mean = np.ascontiguousarray(self._buffers["running_mean"], dtype=x.dtype)
            var = np.ascontiguousarray(self._buffers["running_var"], dtype=x.dtype)
        invstd = (t(1) / np.sqrt(var + t(self.eps))).astype(x.dtype)
        alpha = invstd * self.weight.data if self.affine else invstd
        beta = (self.bias.data - mean * alpha) if self.affine else -mean * alpha
        y = ops.channel_affine(x, np.ascontiguousarray(alpha), np.ascontiguousarray(beta))
        self._cache = ("cpu", x, mean, invstd, use_batch)
        return y

    def backward(self, dy, need_dx=True):
        cache = self._need_cache(dy)
        if cache[0] == "cpu":
            _, x, mean, invstd, use_batch = cache
            w = self.weight.data if self.affine else None
            dx, sum_dy, dotp = ops.batchnorm_bwd(_contig(dy), x, mean, invstd, w, use_batch, need_dx)
            if self.affine:
                if self.weight.requires_grad:
                    self.weight.grad += (dotp * invstd).astype(self.weight.grad.dtype)
                if self.bias.requires_grad:
                    self.bias.grad += sum_dy.astype(self.bias.grad.dtype)
            return dx
        _, xhat, invstd, use_batch, axes, bshape = cache
        if self.affine:
            if self.weight.requires_grad:
                self.weight.grad += (dy * xhat).sum(axis=axes)
            if self.bias.requires_grad:
                self.bias.grad += dy.sum(axis=axes)
        if not need_dx:
            return None
        g = dy * self.weight.data.reshape(bshape) if self.affine else dy
        if not use_batch:
            return g * invstd.reshape(bshape)
        # dx = invstd * (g - mean(g) - xhat * mean(g * xhat)), the means over the batch and the plane
        gm = g.mean(axis=axes).reshape(bshape)
        gxm = (g * xhat).mean(axis=axes).reshape(bshape)
        return (g - gm - xhat * gxm) * invstd.reshape(bshape)

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


# ================================================================ unshared convolution

class LocallyConnected2d(Layer):
    """The lecture's convolution without weight sharing: every output position (p, q) has its own filters.

    weight (P, Q, K, C, R, S), bias (K, P, Q): y[n, k, p, q] = b[k, p, q] +
    sum_{c, r, s} w[p, q, k, c, r, s] * x_pad[n, c, p*sh + r, q*sw + s]. The input size (H, W) is fixed
    at construction, since it sets the number of filters. Written as im2col + one batched GEMM over the
    P*Q positions.
    """

    def __init__(self, in_channels, out_channels, kernel_size, in_size, stride=1, padding=0, bias=True,
                 weight_init="he", bias_init="zeros", seed=None, dtype=np.float32, name=None):
        super().__init__(name=name)
        op = "LocallyConnected2d"
        self.in_channels = _positive_int(op, "in_channels", in_channels)
        self.out_channels = _positive_int(op, "out_channels", out_channels)
        self.kernel_size, self.stride = _pair(op, "kernel_size", kernel_size, 1), _pair(op, "stride", stride, 1)
        self.padding, self.in_size = _pair(op, "padding", padding, 0), _pair(op, "in_size", in_size, 1)
        (R, S), (sh, sw), (ph, pw), (H, W) = self.kernel_size, self.stride, self.padding, self.in_size
        self.P, self.Q = (H + 2 * ph - R) // sh + 1, (W + 2 * pw - S) // sw + 1
        if self.P < 1 or self.Q < 1:
            raise ValueError(f"{op}: kernel {self.kernel_size} does not fit input size {self.in_size} with padding "
                             f"{self.padding}")
        self.weight_init, self.bias_init = _init.get(weight_init).spec, _init.get(bias_init).spec
        dtype = _dtype(op, dtype)
        rng = _init.rng_for(seed)
        fan_in, fan_out = in_channels * R * S, out_channels * R * S
        self.add_parameter("weight", _init.make(weight_init, (self.P, self.Q, out_channels, in_channels, R, S),
                                                fan_in, fan_out, rng, dtype))
        if _flag(op, "bias", bias):
            self.add_parameter("bias", _init.make(bias_init, (out_channels, self.P, self.Q), fan_in, fan_out, rng,
                                                  dtype))

    def output_shape(self, x):
        self._check_rank("LocallyConnected2d", x, (4,), "4-D (N, C, H, W)")
        if x[1] != self.in_channels or tuple(x[2:]) != self.in_size:
            raise ValueError(f"LocallyConnected2d: expects input (N, {self.in_channels}, {self.in_size[0]}, "
                             f"{self.in_size[1]}), got shape {tuple(x)}")
        return (x[0], self.out_channels, self.P, self.Q)

    def forward(self, x):
        self._check_inputs(x)
        xp = array_module(x)
        N, C = x.shape[:2]
        (R, S), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        P, Q, K = self.P, self.Q, self.out_channels
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        win = xp.lib.stride_tricks.sliding_window_view(xpad, (R, S), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :P, :Q]
        cols = xp.ascontiguousarray(win.transpose(2, 3, 0, 1, 4, 5)).reshape(P * Q, N, C * R * S)
        w = self.weight.data.reshape(P * Q, K, C * R * S)
        y = xp.matmul(cols, w.transpose(0, 2, 1))                 # (PQ, N, K)
        y = xp.ascontiguousarray(y.reshape(P, Q, N, K).transpose(2, 3, 0, 1))
        if "bias" in self._params:
            y += self.bias.data
        self._cache = (cols, x.shape)
        return y

    def backward(self, dy, need_dx=True):
        cols, xs = self._need_cache(dy)
        xp = array_module(dy)
        N, C, H, W = xs
        (R, S), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        P, Q, K = self.P, self.Q, self.out_channels
        dyr = xp.ascontiguousarray(dy.transpose(2, 3, 0, 1)).reshape(P * Q, N, K)
        if self.weight.requires_grad:
            self.weight.grad += xp.matmul(dyr.transpose(0, 2, 1), cols).reshape(self.weight.shape)
        b = self._params.get("bias")
        if b is not None and b.requires_grad:
            b.grad += dy.sum(axis=0)
        if not need_dx:
            return None
        dcols = xp.matmul(dyr, self.weight.data.reshape(P * Q, K, C * R * S)).reshape(P, Q, N, C, R, S)
        dxp = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
        for r in range(R):
            for s in range(S):
                rows, cols = slice(r, r + sh * (P - 1) + 1, sh), slice(s, s + sw * (Q - 1) + 1, sw)
                dxp[:, :, rows, cols] += dcols[:, :, :, :, r, s].transpose(2, 3, 0, 1)
        return xp.ascontiguousarray(dxp[:, :, ph:ph + H, pw:pw + W])

    def flops(self, in_shapes, out):
        R, S = self.kernel_size
        return 2 * _numel(out) * self.in_channels * R * S

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=_cfgpair(self.kernel_size), in_size=list(self.in_size), stride=_cfgpair(self.stride),
                    padding=_cfgpair(self.padding),
                    bias="bias" in self._params, weight_init=self.weight_init, bias_init=self.bias_init,
                    dtype=str(self.weight.dtype))


# ================================================================ merging branches

class Add(Layer):
    """Elementwise sum of two or more inputs of one shape (a residual connection). Backward hands dy to each."""

    def output_shape(self, *xs):
        if len(xs) < 2:
            raise ValueError(f"Add: needs at least 2 inputs, got {len(xs)}")
        if any(tuple(s) != tuple(xs[0]) for s in xs):
            raise ValueError(f"Add: inputs must have one shape, got {[tuple(s) for s in xs]}")
        return tuple(xs[0])

    def forward(self, *xs):
        self._check_inputs(*xs)
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        self._cache = len(xs)
        return y

    def backward(self, dy, need_dx=True):
        n = self._need_cache(dy)
        need = need_dx if isinstance(need_dx, (tuple, list)) else (need_dx,) * n
        return tuple(dy if w else None for w in need)

    def flops(self, in_shapes, out):
        return (len(in_shapes) - 1) * _numel(out)


class Concat(Layer):
    """Concatenation along `axis` (default 1, channels), as torch.cat."""

    def __init__(self, axis=1, name=None):
        super().__init__(name=name)
        self.axis = ops._int("Concat", "axis", axis)
        if self.axis < 1:
            raise ValueError(f"Concat: axis must be >= 1 (axis 0 is the batch), got {axis}")

    def output_shape(self, *xs):
        if len(xs) < 2:
            raise ValueError(f"Concat: needs at least 2 inputs, got {len(xs)}")
        a = self.axis
        ref = tuple(xs[0])
        for s in xs:
            s = tuple(s)
            if len(s) != len(ref) or a >= len(s) or s[:a] + s[a + 1:] != ref[:a] + ref[a + 1:]:
                raise ValueError(f"Concat: inputs must agree on every axis but {a}, got {[tuple(t) for t in xs]}")
        return ref[:a] + (sum(int(s[a]) for s in xs),) + ref[a + 1:]

    def forward(self, *xs):
        self._check_inputs(*xs)
        xp = array_module(*xs)
        self._cache = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, dy, need_dx=True):
        sizes = self._need_cache(dy)
        xp = array_module(dy)
        need = need_dx if isinstance(need_dx, (tuple, list)) else (need_dx,) * len(sizes)
        out, start = [], 0
        for n, w in zip(sizes, need):
            sl = [slice(None)] * dy.ndim
            sl[self.axis] = slice(start, start + n)
            out.append(xp.ascontiguousarray(dy[tuple(sl)]) if w else None)
            start += n
        return tuple(out)

    def config(self):
        return dict(axis=self.axis)


__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "FractionalMaxPool2d", "ReLU", "LeakyReLU",
           "Linear", "DropConnect", "Flatten", "Dropout", "StochasticDepth", "BatchNorm1d", "BatchNorm2d",
           "LocalResponseNorm", "LocallyConnected2d", "Add", "Concat"]
