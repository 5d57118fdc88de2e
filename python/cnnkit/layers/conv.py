"""Convolutions: Conv2d (shared weights, the ops kernels) and LocallyConnected2d (unshared weights)."""
import numpy as np

from .. import init as _init
from .. import ops
from ..ops.conv2d import check_algorithm as _algorithm, winograd_applies as _winograd_applies
from .._validate import check_flag as _flag, check_float_dtype as _dtype, check_positive_int as _positive_int
from .._xp import array_module
from ..layer import Layer
from ._util import _cfgpair, _contig, _gather2d, _numel, _pair, _scatter2d


_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NP_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}   # torch's name -> np.pad's


def _conv_padding(op, padding, kernel_size, stride, dilation, padding_mode="zeros"):
    """padding as torch.nn.Conv2d takes it: an int, an (h, w) pair, "valid" (no padding) or "same" (stride 1
    only; the output keeps the input's size). Returns (padding as torch's attribute shows it, the padding
    the conv kernel does (equal on both sides), the padding done on the input before it (top, bottom, left,
    right)). The kernel pads zeros on both sides equally, so "same" with an odd total dilation * (kernel - 1)
    on an axis pads the extra row (column) on the bottom (right) explicitly, as torch does; padding_mode
    other than "zeros" pads all of it explicitly (np.pad's reflect / edge / wrap) and the kernel none."""
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"{op}: padding_mode must be one of {list(_PADDING_MODES)}, got {padding_mode!r}")
    if not isinstance(padding, str):
        sides = [(p, p) for p in _pair(op, "padding", padding, 0)]
        shown = tuple(p for p, _ in sides)
    elif padding == "valid":
        sides, shown = [(0, 0), (0, 0)], (0, 0)
    elif padding != "same":
        raise ValueError(f"{op}: padding must be an int, a pair (h, w), 'valid' or 'same', got {padding!r}")
    elif stride != (1, 1):
        raise ValueError(f"{op}: padding='same' needs stride 1 (as in torch), got stride {stride}")
    else:
        total = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        sides = [(t // 2, t - t // 2) for t in total]
        shown = tuple(a for a, _ in sides) if all(a == b for a, b in sides) else "same"
    if padding_mode == "zeros":
        kernel = tuple(a for a, _ in sides)
        explicit = (0, sides[0][1] - sides[0][0], 0, sides[1][1] - sides[1][0])
    else:
        kernel, explicit = (0, 0), sides[0] + sides[1]
    return shown, kernel, explicit


def _check_pad_fits(op, x_shape, explicit, mode):
    """torch's limits: reflect needs each side's padding < the input size, circular <= it."""
    if mode not in ("reflect", "circular"):
        return
    H, W = x_shape[-2:]
    top, bottom, left, right = explicit
    most_h, most_w = max(top, bottom), max(left, right)
    bad = most_h >= H or most_w >= W if mode == "reflect" else most_h > H or most_w > W
    if bad:
        rel = "<" if mode == "reflect" else "<="
        raise ValueError(f"{op}: padding_mode {mode!r} needs padding {rel} the input size on each side, got padding "
                         f"(top, bottom, left, right) = {explicit} for input {tuple(x_shape)}")


def _pad_maps(x_shape, explicit, mode):
    H, W = x_shape[-2:]
    top, bottom, left, right = explicit
    return (np.pad(np.arange(H), (top, bottom), mode=_NP_MODES[mode]),
            np.pad(np.arange(W), (left, right), mode=_NP_MODES[mode]))


def _pad_input(x, explicit, mode):
    """x padded by explicit = (top, bottom, left, right) with zeros or torch's padding_mode."""
    if not any(explicit):
        return x
    xp = array_module(x)
    top, bottom, left, right = explicit
    if mode == "zeros":
        return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ih, iw = (xp.asarray(i) for i in _pad_maps(x.shape, explicit, mode))
    return _gather2d(x, ih, iw)


def _fold_grad(g, x_shape, explicit, mode):
    """The gradient of _pad_input: the padded gradient cropped (zeros) or folded back onto the cells the
    padding copied (the other modes), summing every copy's share."""
    if not any(explicit):
        return g
    xp = array_module(g)
    top, _, left, _ = explicit
    H, W = x_shape[-2:]
    if mode == "zeros":
        return xp.ascontiguousarray(g[:, :, top:top + H, left:left + W])
    ih, iw = (xp.asarray(i) for i in _pad_maps(x_shape, explicit, mode))
    return _scatter2d(g, ih, iw, H, W)


class Conv2d(Layer):
    """2-D convolution, as torch.nn.Conv2d: weight (K, C/groups, R, S), bias (K,). Kernel: cnnkit.ops.conv2d_*.

    padding: an int, an (h, w) pair, "valid" or "same" (any kernel; an odd total puts the extra row and
    column at the bottom and right, as torch). padding_mode: "zeros" (the kernel's own padding), "reflect",
    "replicate" or "circular" (the input padded explicitly, then a padding-0 convolution).
    algorithm: the CPU algorithm of its three passes, "auto", "gemm", "winograd" (3x3 kernel, stride 1,
    dilation 1 only) or None (default: cnnkit.get_conv_algorithm() at each call). See cnnkit.ops.conv2d.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", weight_init="he", bias_init="zeros", seed=None, dtype=np.float32,
                 name=None, algorithm=None):
        super().__init__(name=name)
        op = "Conv2d"
        self.in_channels = _positive_int(op, "in_channels", in_channels)
        self.out_channels = _positive_int(op, "out_channels", out_channels)
        self.kernel_size, self.stride = _pair(op, "kernel_size", kernel_size, 1), _pair(op, "stride", stride, 1)
        self.dilation = _pair(op, "dilation", dilation, 1)
        self.padding, self._kpad, self._explicit = _conv_padding(op, padding, self.kernel_size, self.stride,
                                                                 self.dilation, padding_mode)
        self.padding_mode = padding_mode
        self.groups = _positive_int(op, "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{op}: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        self.algorithm = _algorithm(op, "algorithm", algorithm)
        if self.algorithm == "winograd" and not _winograd_applies((0, 0) + self.kernel_size, self.stride,
                                                                    self.dilation):
            raise ValueError(f"{op}: algorithm 'winograd' needs a 3x3 kernel, stride 1 and dilation 1, got "
                             f"kernel_size {self.kernel_size}, stride {self.stride}, dilation {self.dilation}; "
                             f"use algorithm 'gemm', 'auto' or None")
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
        return dict(stride=self.stride, padding=self._kpad, dilation=self.dilation, groups=self.groups)

    def _padded_shape(self, x):
        top, bottom, left, right = self._explicit
        return tuple(x[:2]) + (x[2] + top + bottom, x[3] + left + right)

    def _alg(self):
        return dict(algorithm=self.algorithm)

    def output_shape(self, x):
        self._check_rank("Conv2d", x, (4,), "4-D (N, C, H, W)")
        if x[1] != self.in_channels:
            raise ValueError(f"Conv2d: expects {self.in_channels} input channels, got shape {tuple(x)}")
        _check_pad_fits("Conv2d", tuple(x), self._explicit, self.padding_mode)
        return ops.conv2d_out_shape(self._padded_shape(x), self.weight.shape, **self._hp())

    def forward(self, x, relu=False):
        """y = conv2d(x) + bias; with ``relu=True`` also max(y, 0) in the same pass (a model fuses a Conv2d
        whose only consumer is a ReLU this way; the ReLU then passes y through). Padding the kernel cannot
        do (padding_mode, the extra row of an asymmetric "same") is done on x first, and folded back in backward."""
        self._check_inputs(x)
        b = self._params["bias"].data if "bias" in self._params else None
        xs, x = x.shape, _pad_input(x, self._explicit, self.padding_mode)
        y = ops.conv2d_fwd(_contig(x), self.weight.data, b, **self._hp(), **self._alg(), relu=relu)
        self._cache = (x, xs)
        return y

    def backward(self, dy, need_dx=True):
        x, xs = self._need_cache(dy)
        dy = _contig(dy)
        w = self.weight
        if w.requires_grad:
            ops.conv2d_bwd_weight(dy, _contig(x), w.shape, **self._hp(), out=w.grad, accumulate=True, **self._alg())
        b = self._params.get("bias")
        if b is not None and b.requires_grad:
            ops.conv2d_bwd_bias(dy, out=b.grad, accumulate=True)
        if not need_dx:
            return None
        dx = ops.conv2d_bwd_data(dy, w.data, x.shape, **self._hp(), **self._alg())
        return _fold_grad(dx, xs, self._explicit, self.padding_mode)

    def flops(self, in_shapes, out):
        N, K, P, Q = out
        R, S = self.kernel_size
        bias = N * K * P * Q if "bias" in self._params else 0
        return 2 * N * K * P * Q * (self.in_channels // self.groups) * R * S + bias

    def config(self):
        cfg = dict(in_channels=self.in_channels, out_channels=self.out_channels,
                   kernel_size=_cfgpair(self.kernel_size), stride=_cfgpair(self.stride),
                   padding=self.padding if isinstance(self.padding, str) else _cfgpair(self.padding),
                   dilation=_cfgpair(self.dilation), groups=self.groups,
                   bias="bias" in self._params, weight_init=self.weight_init, bias_init=self.bias_init,
                   dtype=str(self.weight.dtype), algorithm=self.algorithm)
        if self.padding_mode != "zeros":
            cfg["padding_mode"] = self.padding_mode
        return cfg


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


__all__ = ["Conv2d", "LocallyConnected2d"]
