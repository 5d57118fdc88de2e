"""Two parameter-free layers the zoo needs: exact adaptive average pooling (torchvision's AlexNet and VGG
put nn.AdaptiveAvgPool2d before the classifier) and the CIFAR ResNets' option-A shortcut."""
import numpy as np

from .. import ops
from .._xp import array_module
from ..layer import Layer

_pair = ops._pair


def _bins(n_in, n_out):
    # torch's adaptive pooling: bin i covers [floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))
    return [((i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)) for i in range(n_out)]


class AdaptiveAvgPool2d(Layer):
    """Average pooling to a fixed output size (P, Q), as torch.nn.AdaptiveAvgPool2d, for any input size.

    Output cell (i, j) is the mean of input rows floor(i*H/P) .. ceil((i+1)*H/P) - 1 and the matching
    columns, exactly torch's bins: they overlap when P does not divide H, and an input smaller than the
    output is replicated (a 1x1 map pooled to 7x7 gives 49 copies). When P divides H and Q divides W it is
    plain average pooling with kernel = stride = (H/P, W/Q), and when (H, W) == (P, Q) it is the identity.
    Backward spreads each output gradient evenly over its bin and sums where bins overlap.
    """

    def __init__(self, output_size, name=None):
        super().__init__(name=name)
        self.output_size = _pair("AdaptiveAvgPool2d", "output_size", output_size, 1)

    def output_shape(self, x):
        self._check_rank("AdaptiveAvgPool2d", x, (4,), "4-D (N, C, H, W)")
        if x[2] < 1 or x[3] < 1:
            raise ValueError(f"AdaptiveAvgPool2d: input planes must be non-empty, got shape {tuple(x)}")
        return (x[0], x[1]) + self.output_size

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

    def config(self):
        return dict(output_size=list(self.output_size))


class ShortcutA(Layer):
    """The parameter-free shortcut of He et al. (2016), section 4.2, option A, used by the CIFAR ResNets
    when a stage halves the map and widens it: x[:, :, ::stride, ::stride], zero-padded with `pad` channels
    on each side (out_channels = in_channels + 2 * pad), as the common PyTorch port writes it:
    F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))."""

    def __init__(self, stride, pad, name=None):
        super().__init__(name=name)
        self.stride, self.pad = ops._int("ShortcutA", "stride", stride, 1), ops._int("ShortcutA", "pad", pad, 0)

    def output_shape(self, x):
        self._check_rank("ShortcutA", x, (4,), "4-D (N, C, H, W)")
        s = self.stride
        return (x[0], x[1] + 2 * self.pad, -(-x[2] // s), -(-x[3] // s))

    def forward(self, x):
        shape = self._check_inputs(x)
        xp = array_module(x)
        y = xp.zeros(shape, dtype=x.dtype)
        s, p = self.stride, self.pad
        y[:, p:p + x.shape[1]] = x[:, :, ::s, ::s]
        self._cache = x.shape
        return y

    def backward(self, dy, need_dx=True):
        xs = self._need_cache(dy)
        if not need_dx:
            return None
        xp = array_module(dy)
        dx = xp.zeros(xs, dtype=dy.dtype)
        s, p = self.stride, self.pad
        dx[:, :, ::s, ::s] = dy[:, p:p + xs[1]]
        return dx

    def config(self):
        return dict(stride=self.stride, pad=self.pad)


__all__ = ["AdaptiveAvgPool2d", "ShortcutA"]
