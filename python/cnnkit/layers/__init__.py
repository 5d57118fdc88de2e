"""Layers: each is a forward and a backward that sit side by side, with named parameters and a shape rule.

Semantics follow torch.nn (the tests compare every layer with its twin). Convolution, max-pooling, ReLU
and dropout call the kernels in cnnkit.ops; the rest is array glue written against ``xp`` (numpy on the
CPU, CuPy on the GPU). Every forward starts with ``self._check_inputs`` and every backward with ``self._need_cache(dy)``
(layer.Layer): float32/float64 inputs of the parameters' dtype, and a dy of the output's shape and dtype, as the
kernels require. Activation gradients are written (=); parameter gradients accumulate (+=) into ``p.grad``,
read fresh from the Parameter on every call (an optimizer may rebind it to a FlatBuffer view).
"""
from .conv import Conv2d, LocallyConnected2d
from .pooling import AdaptiveAvgPool2d, AvgPool2d, FractionalMaxPool2d, GlobalAvgPool2d, MaxPool2d
from .activation import LeakyReLU, ReLU
from .linear import DropConnect, Flatten, Linear
from .dropout import Dropout, StochasticDepth
from .normalization import BatchNorm1d, BatchNorm2d, LocalResponseNorm
from .merge import Add, Concat

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "FractionalMaxPool2d", "AdaptiveAvgPool2d", "ReLU",
           "LeakyReLU", "Linear", "DropConnect", "Flatten", "Dropout", "StochasticDepth", "BatchNorm1d", "BatchNorm2d",
           "LocalResponseNorm", "LocallyConnected2d", "Add", "Concat"]
from .activation import ELU, GELU, Identity, LogSoftmax, PReLU, Sigmoid, SiLU, Softmax, Tanh  # noqa: E402

__all__ += ["Tanh", "Sigmoid", "SiLU", "ELU", "GELU", "Softmax", "LogSoftmax", "Identity", "PReLU"]
from .normalization import GroupNorm, InstanceNorm2d, LayerNorm  # noqa: E402

__all__ += ["LayerNorm", "GroupNorm", "InstanceNorm2d"]
from .normalization import SyncBatchNorm  # noqa: E402

__all__ += ["SyncBatchNorm"]

# transposed convolution, padding, upsampling, channel dropout, adaptive max-pooling
from .conv_transpose import ConvTranspose2d  # noqa: E402
from .dropout import Dropout2d  # noqa: E402
from .pooling import AdaptiveMaxPool2d  # noqa: E402
from .resample import Upsample, ZeroPad2d  # noqa: E402

__all__ += ["ConvTranspose2d", "ZeroPad2d", "Upsample", "Dropout2d", "AdaptiveMaxPool2d"]
