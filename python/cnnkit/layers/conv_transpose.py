"""ConvTranspose2d: the gradient of a convolution with respect to its input, used as a layer.

With the weight laid out as torch's (C_in, C_out/groups, R, S), that is a conv2d weight (K = C_in,
C/groups = C_out/groups) for a convolution from the output (C_out channels) back to the input. So the
three passes are the conv2d kernels with the roles swapped: forward is conv2d_bwd_data of the input,
backward-data is conv2d_fwd of the output gradient, backward-weight is conv2d_bwd_weight with the input
in the place of dy and the output gradient in the place of x. No kernels of its own.
"""
import math

import numpy as np

from .. import init as _init
from .. import ops
from .._validate import check_flag as _flag, check_float_dtype as _dtype, check_positive_int as _positive_int
from .._xp import array_module
from ..layer import Layer
from ._util import _cfgpair, _contig, _numel, _pair


def transpose_hparams(op, stride, padding, output_padding, dilation):
    """(stride, padding, output_padding, dilation) as pairs; output_padding < stride or < dilation per axis
    (torch's rule: otherwise the extra rows would lie outside every window)."""
    s, p = _pair(op, "stride", stride, 1), _pair(op, "padding", padding, 0)
    op_, d = _pair(op, "output_padding", output_padding, 0), _pair(op, "dilation", dilation, 1)
    for a in range(2):
        if op_[a] >= s[a] and op_[a] >= d[a]:
            raise ValueError(f"{op}: output_padding must be smaller than either stride or dilation, got "
                             f"output_padding {op_}, stride {s}, dilation {d}")
    return s, p, op_, d


def transpose_out_hw(op, hw, kernel, s, p, op_, d):
    """torch's output size: (H - 1) * stride - 2 * padding + dilation * (R - 1) + output_padding + 1."""
    out = tuple((hw[a] - 1) * s[a] - 2 * p[a] + d[a] * (kernel[a] - 1) + op_[a] + 1 for a in range(2))
    if min(out) < 1:
        raise ValueError(f"{op}: the output size {out} for input size {tuple(hw)}, kernel {tuple(kernel)}, "
                         f"stride {s}, padding {p}, dilation {d} must be >= 1")
    return out


def _extent(P, R, s, p, d):
    # the conv2d output size of an input of size P: rows the transposed input must have for the kernels
    return (P + 2 * p - d * (R - 1) - 1) // s + 1


class _Plan:
    """Shapes of one transposed convolution: x (N, C_in, H, W) -> y (N, C_out, P, Q). When output_padding
    is not below the stride (allowed when it is below the dilation), the convolution of y has more rows
    than x: x is then padded with zeros at the end to that size, which adds nothing to y."""

    def __init__(self, op, x_shape, w_shape, s, p, op_, d, groups):
        N, C, H, W = x_shape
        R, S = w_shape[2:]
        self.hp = dict(stride=s, padding=p, dilation=d, groups=groups)
        P, Q = transpose_out_hw(op, (H, W), (R, S), s, p, op_, d)
        self.y_shape = (N, w_shape[1] * groups, P, Q)
        self.ext = (_extent(P, R, s[0], p[0], d[0]), _extent(Q, S, s[1], p[1], d[1]))
        self.hw = (H, W)

    def widen(self, x):
        if self.ext == self.hw:
            return x
        xp = array_module(x)
        return xp.pad(x, ((0, 0), (0, 0), (0, self.ext[0] - self.hw[0]), (0, self.ext[1] - self.hw[1])))

    def forward(self, x, w, b):
        y = ops.conv2d_bwd_data(_contig(self.widen(x)), w, self.y_shape, **self.hp)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def grad_input(self, g, w):
        dx = ops.conv2d_fwd(g, w, None, **self.hp)
        H, W = self.hw
        return dx if self.ext == self.hw else _contig(dx[:, :, :H, :W])

    def grad_weight(self, g, x, w_shape, out=None):
        kw = {} if out is None else dict(out=out, accumulate=True)
        return ops.conv2d_bwd_weight(_contig(self.widen(x)), g, w_shape, **self.hp, **kw)


class ConvTranspose2d(Layer):
    """Transposed 2-D convolution, as torch.nn.ConvTranspose2d: weight (C_in, C_out/groups, R, S), bias
    (C_out,); output size (H - 1) * stride - 2 * padding + dilation * (R - 1) + output_padding + 1.

    Initialised as torch does (kaiming_uniform with a = sqrt(5)): weight and bias uniform on [-b, b],
    b = 1 / sqrt(C_out / groups * R * S), drawn from ``seed`` (or the global generator).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, seed=None, dtype=np.float32, name=None):
        super().__init__(name=name)
        op = "ConvTranspose2d"
        self.in_channels = _positive_int(op, "in_channels", in_channels)
        self.out_channels = _positive_int(op, "out_channels", out_channels)
        self.kernel_size = _pair(op, "kernel_size", kernel_size, 1)
        self.stride, self.padding, self.output_padding, self.dilation = transpose_hparams(
            op, stride, padding, output_padding, dilation)
        self.groups = _positive_int(op, "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{op}: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        dtype = _dtype(op, dtype)
        R, S = self.kernel_size
        rng = _init.rng_for(seed)
        bound = 1.0 / math.sqrt(out_channels // groups * R * S)
        w = rng.uniform(-bound, bound, size=(in_channels, out_channels // groups, R, S))
        self.add_parameter("weight", np.ascontiguousarray(w, dtype=dtype))
        if _flag(op, "bias", bias):
            self.add_parameter("bias", rng.uniform(-bound, bound, size=(out_channels,)).astype(dtype))

    def _plan(self, x_shape):
        return _Plan("ConvTranspose2d", x_shape, self.weight.shape, self.stride, self.padding,
                     self.output_padding, self.dilation, self.groups)

    def output_shape(self, x):
        self._check_rank("ConvTranspose2d", x, (4,), "4-D (N, C, H, W)")
        if x[1] != self.in_channels:
            raise ValueError(f"ConvTranspose2d: expects {self.in_channels} input channels, got shape {tuple(x)}")
        return self._plan(tuple(x)).y_shape

    def forward(self, x):
        self._check_inputs(x)
        plan = self._plan(x.shape)
        b = self._params["bias"].data if "bias" in self._params else None
        x = _contig(x)
        self._cache = (x, plan)
        return plan.forward(x, self.weight.data, b)

    def backward(self, dy, need_dx=True):
        x, plan = self._need_cache(dy)
        dy = _contig(dy)
        w = self.weight
        if w.requires_grad:
            plan.grad_weight(dy, x, w.shape, out=w.grad)
        b = self._params.get("bias")
        if b is not None and b.requires_grad:
            ops.conv2d_bwd_bias(dy, out=b.grad, accumulate=True)
        return plan.grad_input(dy, w.data) if need_dx else None

    def flops(self, in_shapes, out):
        R, S = self.kernel_size
        bias = _numel(out) if "bias" in self._params else 0
        return 2 * _numel(in_shapes[0]) * (self.out_channels // self.groups) * R * S + bias

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=_cfgpair(self.kernel_size), stride=_cfgpair(self.stride),
                    padding=_cfgpair(self.padding), output_padding=_cfgpair(self.output_padding),
                    groups=self.groups, bias="bias" in self._params, dilation=_cfgpair(self.dilation),
                    dtype=str(self.weight.dtype))


__all__ = ["ConvTranspose2d"]
