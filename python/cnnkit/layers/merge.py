"""Layers that merge branches: Add and Concat."""
from .._validate import check_int
from .._xp import array_module
from ..layer import Layer
from ._util import _numel


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
        self.axis = check_int("Concat", "axis", axis)
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


__all__ = ["Add", "Concat"]
