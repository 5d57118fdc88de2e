"""The CIFAR ResNets' option-A shortcut, a parameter-free layer only those models use (AdaptiveAvgPool2d, which
torchvision's AlexNet and VGG need, lives in cnnkit.layers.pooling and is re-exported here)."""
from .._validate import check_int
from .._xp import array_module
from ..layer import Layer
from ..layers.pooling import AdaptiveAvgPool2d


class ShortcutA(Layer):
    """The parameter-free shortcut of He et al. (2016), section 4.2, option A, used by the CIFAR ResNets
    when a stage halves the map and widens it: x[:, :, ::stride, ::stride], zero-padded with `pad` channels
    on each side (out_channels = in_channels + 2 * pad), as the common PyTorch port writes it:
    F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))."""

    def __init__(self, stride, pad, name=None):
        super().__init__(name=name)
        self.stride, self.pad = check_int("ShortcutA", "stride", stride, 1), check_int("ShortcutA", "pad", pad, 0)

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
