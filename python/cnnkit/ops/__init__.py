"""``cnnkit.ops``: the validated face of the compiled kernels, one function per kernel entry point.

Conventions. Activations are NCHW, conv weights (K, C/groups, R, S), as in PyTorch. Arrays are C-contiguous
float32 or float64 (one dtype per call; indices int64, dropout masks uint8). Every function checks its
arguments once and raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape, layout or value)
with a message naming the op and the argument; nothing is copied or cast silently.

``out=`` arrays must not share memory with any input (ValueError naming both): the kernels read their inputs
while they write it. Only the elementwise ops may work in place, on the very same buffer:
``relu_fwd(x, out=x)``, ``relu_bwd(dy, y, out=dy)`` (or ``out=y``), ``channel_affine(x, ..., out=x)``.

Devices. The op's first array picks the device: numpy runs on the CPU through ``cnnkit._C``, CuPy on its GPU
through ``cnnkit.ops._cuda`` (outputs allocated with CuPy, kernels queued on CuPy's current stream); the
checks and messages are the same. A numpy array mixed with a CuPy one raises TypeError naming both.

Adding an op: the checks and output allocation in ``ops/<family>.py`` (the array checks are in
``cnnkit._validate``), ending in one call ``_backend.kernels(x).<name>(inputs..., outputs..., params...)``;
the CPU kernel as ``cnnkit._C.<name>`` with that signature (csrc/), the GPU one as ``ops/_cuda.<name>`` (same
signature, CuPy arrays, calling a ``_C.<name>_cuda`` binding); the re-export and ``__all__`` entry here
(``dir(cnnkit.ops)`` lists ``__all__``); the CuPy stand-in's routing list in tests/helpers/fakecupy.py.
"""
import math  # noqa: F401  (public names of cnnkit.ops kept as they were)
import numbers  # noqa: F401

import numpy as np  # noqa: F401


from .batchnorm import batchnorm_bwd, batchnorm_stats, channel_affine
from .conv2d import (conv2d_bwd_bias, conv2d_bwd_data, conv2d_bwd_weight, conv2d_fwd, conv2d_out_shape,
                     get_conv_algorithm, set_conv_algorithm)
from .dropout import dropout_bwd, dropout_fwd
from .matmul import matmul
from .maxpool2d import maxpool2d_bwd, maxpool2d_fwd
from .relu import relu_bwd, relu_fwd

__all__ = ["conv2d_out_shape", "conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_weight", "conv2d_bwd_bias",
           "set_conv_algorithm", "get_conv_algorithm",
           "maxpool2d_fwd", "maxpool2d_bwd", "dropout_fwd", "dropout_bwd", "matmul",
           "batchnorm_stats", "channel_affine", "batchnorm_bwd", "relu_fwd", "relu_bwd"]


def __dir__():
    # The public functions only: the submodules (conv2d, _backend, ...) and the helper modules imported above
    # stay reachable as attributes but are not part of the listed API.
    return sorted(__all__)
