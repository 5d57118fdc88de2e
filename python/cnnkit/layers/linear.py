"""Fully connected layers: Linear, DropConnect (Linear with a dropped weight mask) and Flatten."""
import numpy as np

from .. import init as _init
from .. import ops
from .._validate import (check_flag as _flag, check_float_dtype as _dtype, check_int,
                         check_positive_int as _positive_int, check_prob as _prob)
from ..layer import Layer
from ._util import _contig, _numel


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
    """Input dimensions start_dim..end_dim merged into one, as nn.Flatten(start_dim=1, end_dim=-1): by default
    (N, d1, d2, ...) -> (N, d1 * d2 * ...). Negative dims count from the end, as torch."""

    def __init__(self, start_dim=1, end_dim=-1, name=None):
        super().__init__(name=name)
        self.start_dim = check_int("Flatten", "start_dim", start_dim)
        self.end_dim = check_int("Flatten", "end_dim", end_dim)
        if (self.start_dim < 0) == (self.end_dim < 0) and self.start_dim > self.end_dim:
            raise ValueError(f"Flatten: start_dim ({self.start_dim}) must not come after end_dim ({self.end_dim})")

    def _span(self, x):
        """(s, e): the merged dimensions of an input of shape x, both within its rank."""
        nd = len(x)
        if (self.start_dim, self.end_dim) == (1, -1) and nd < 2:
            raise ValueError(f"Flatten: input must have a batch dimension and at least one more, got shape {tuple(x)}")
        out = []
        for name, d in (("start_dim", self.start_dim), ("end_dim", self.end_dim)):
            if not -nd <= d < nd:
                raise ValueError(f"Flatten: {name} must be in [{-nd}, {nd - 1}] for a {nd}-D input, got {d}")
            out.append(d % nd)
        if out[0] > out[1]:
            raise ValueError(f"Flatten: start_dim ({self.start_dim}) must not come after end_dim ({self.end_dim}) "
                             f"for a {nd}-D input")
        return out

    def output_shape(self, x):
        s, e = self._span(x)
        return tuple(x[:s]) + (_numel(x[s:e + 1]),) + tuple(x[e + 1:])

    def forward(self, x):
        shape = self._check_inputs(x)
        self._cache = x.shape
        return _contig(x).reshape(shape)

    def backward(self, dy, need_dx=True):
        xs = self._need_cache(dy)
        return _contig(dy).reshape(xs) if need_dx else None

    def config(self):
        """Only the dims that differ from torch's defaults, so a default Flatten saves as it always has ({})."""
        c = {}
        if self.start_dim != 1:
            c["start_dim"] = self.start_dim
        if self.end_dim != -1:
            c["end_dim"] = self.end_dim
        return c


__all__ = ["Linear", "DropConnect", "Flatten"]
