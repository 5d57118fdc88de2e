"""Pooling: max, average, global average, fractional max and adaptive average and max pooling."""
import numpy as np

from .. import ops
from .._validate import check_float, check_flag as _flag
from .._xp import array_module, is_device_array
from ..layer import Layer, Node
from ._util import _cfgpair, _contig, _numel, _pair


class _ArgmaxPool(Layer):
    """Shared by the max-pooling layers: forward caches (indices, x shape); backward scatters through them."""

    def backward(self, dy, need_dx=True):
        idx, xs = self._need_cache(dy)
        return ops.maxpool2d_bwd(_contig(dy), idx, xs) if need_dx else None

    def flops(self, in_shapes, out):
        return _numel(out) * self.kernel_size[0] * self.kernel_size[1]


class MaxPool2d(_ArgmaxPool):
    """Max-pooling with argmax, as torch.nn.MaxPool2d (stride defaults to kernel_size). Kernel: ops.maxpool2d_*.

    With ``return_indices=True`` a call returns (output, indices), as torch's: indices int64, of the output's
    shape, flat within each (n, c) plane of the input (ih * W + iw, padding not counted), which is the
    kernel's own argmax layout, so they are torch's as they are (F.max_unpool2d reads them). Inside a
    Sequential or Graph, which pass one value on, the layer passes the output on; the indices of the last
    call are in ``last_indices`` either way."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False,
                 name=None):
        super().__init__(name=name)
        op = "MaxPool2d"
        self.kernel_size = _pair(op, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _pair(op, "stride", stride, 1)
        self.padding, self.dilation = _pair(op, "padding", padding, 0), _pair(op, "dilation", dilation, 1)
        self.return_indices = _flag(op, "return_indices", return_indices)
        self.ceil_mode = _flag(op, "ceil_mode", ceil_mode)
        self.last_indices = None

    def __call__(self, *xs):
        out = super().__call__(*xs)
        if not self.return_indices or isinstance(out, Node):
            return out
        return out, self.last_indices

    def _hp(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, ceil_mode=self.ceil_mode)

    def output_shape(self, x):
        self._check_rank("MaxPool2d", x, (4,), "4-D (N, C, H, W)")
        from .. import _C
        try:
            return tuple(_C.maxpool2d_out_shape(tuple(x), self.kernel_size, self.stride, self.padding,
                                                self.dilation, self.ceil_mode))
        except ValueError as e:
            raise ValueError(f"MaxPool2d: cannot pool input {tuple(x)}: {e}") from None

    def forward(self, x):
        self._check_inputs(x)
        y, idx = ops.maxpool2d_fwd(_contig(x), self.kernel_size, **self._hp())
        self._cache = (idx, x.shape)
        if self.return_indices:
            self.last_indices = idx.copy()    # the user's copy: backward scatters through the cached one
        return y

    def config(self):
        cfg = dict(kernel_size=_cfgpair(self.kernel_size), stride=_cfgpair(self.stride),
                   padding=_cfgpair(self.padding), dilation=_cfgpair(self.dilation), ceil_mode=self.ceil_mode)
        if self.return_indices:
            cfg["return_indices"] = True
        return cfg


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


def _bins(n_in, n_out):
    # torch's adaptive pooling: bin i covers [floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))
    return [((i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)) for i in range(n_out)]


class _AdaptiveSize:
    """The output size of the adaptive pools: the (P, Q) argument, the output shape and the config."""

    def __init__(self, output_size, name=None):
        super().__init__(name=name)
        self.output_size = _pair(type(self).__name__, "output_size", output_size, 1)

    def output_shape(self, x):
        op = type(self).__name__
        self._check_rank(op, x, (4,), "4-D (N, C, H, W)")
        if x[2] < 1 or x[3] < 1:
            raise ValueError(f"{op}: input planes must be non-empty, got shape {tuple(x)}")
        return (x[0], x[1]) + self.output_size

    def config(self):
        return dict(output_size=list(self.output_size))


class AdaptiveAvgPool2d(_AdaptiveSize, Layer):
    """Average pooling to a fixed output size (P, Q), as torch.nn.AdaptiveAvgPool2d, for any input size.

    Output cell (i, j) is the mean of input rows floor(i*H/P) .. ceil((i+1)*H/P) - 1 and the matching
    columns, exactly torch's bins: they overlap when P does not divide H, and an input smaller than the
    output is replicated (a 1x1 map pooled to 7x7 gives 49 copies). When P divides H and Q divides W it is
    plain average pooling with kernel = stride = (H/P, W/Q), and when (H, W) == (P, Q) it is the identity.
    Backward spreads each output gradient evenly over its bin and sums where bins overlap.
    """

    def forward(self, x):
        N, C, P, Q = self._check_inputs(x)
        H, W = x.shape[2:]
        xp = array_module(x)
        self._cache = x.shape
        if (H, W) == (P, Q):
            return x.copy()
        if H % P == 0 and W % Q == 0:   # equal, disjoint bins: one reshape
            return xp.ascontiguousarray(x.reshape(N, C, P, H // P, Q, W // Q).mean(axis=(3, 5)))
        y = xp.empty((N, C, P, Q), dtype=x.dtype)
        for i, (h0, h1) in enumerate(_bins(H, P)):
            for j, (w0, w1) in enumerate(_bins(W, Q)):
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
        return y

    def backward(self, dy, need_dx=True):
        xs = self._need_cache(dy)
        if not need_dx:
            return None
        N, C, H, W = xs
        P, Q = self.output_size
        xp = array_module(dy)
        if (H, W) == (P, Q):
            return xp.ascontiguousarray(dy)
        if H % P == 0 and W % Q == 0:
            kh, kw = H // P, W // Q
            g = (dy / dy.dtype.type(kh * kw))[:, :, :, None, :, None]
            return xp.ascontiguousarray(xp.broadcast_to(g, (N, C, P, kh, Q, kw)).reshape(xs))
        dx = xp.zeros(xs, dtype=dy.dtype)
        for i, (h0, h1) in enumerate(_bins(H, P)):
            for j, (w0, w1) in enumerate(_bins(W, Q)):
                dx[:, :, h0:h1, w0:w1] += (dy[:, :, i, j] / dy.dtype.type((h1 - h0) * (w1 - w0)))[:, :, None, None]
        return dx

    def flops(self, in_shapes, out):
        return int(np.prod(in_shapes[0]))



class AdaptiveMaxPool2d(_AdaptiveSize, _ArgmaxPool):
    """Max-pooling to a fixed output size (P, Q), as torch.nn.AdaptiveMaxPool2d: output cell (i, j) is the
    maximum over torch's bin (rows floor(i*H/P) .. ceil((i+1)*H/P) - 1, the same for columns), the first
    maximum in row-major order on ties. Backward sends each gradient to its argmax (ops.maxpool2d_bwd),
    summing where bins overlap."""

    def forward(self, x):
        N, C, P, Q = self._check_inputs(x)
        H, W = x.shape[2:]
        xp = array_module(x)
        y = xp.empty((N, C, P, Q), dtype=x.dtype)
        idx = xp.empty((N, C, P, Q), dtype=np.int64)
        for i, (h0, h1) in enumerate(_bins(H, P)):
            for j, (w0, w1) in enumerate(_bins(W, Q)):
                win = x[:, :, h0:h1, w0:w1].reshape(N, C, -1)
                a = win.argmax(axis=2)                 # the first maximum, as torch
                y[:, :, i, j] = xp.take_along_axis(win, a[:, :, None], axis=2)[:, :, 0]
                idx[:, :, i, j] = (h0 + a // (w1 - w0)) * W + w0 + a % (w1 - w0)
        self._cache = (idx, x.shape)
        return y

    def flops(self, in_shapes, out):
        return _numel(in_shapes[0])



__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "FractionalMaxPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]
