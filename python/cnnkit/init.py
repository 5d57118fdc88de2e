"""Weight initialisers: He/Kaiming (He et al. 2015), Xavier/Glorot (Glorot & Bengio 2010), the CS231n
lecture's small Gaussian (std 0.01 or 0.001) and constants (zeros for biases).

Layers take a spec per parameter (weight_init="he", "xavier", "gaussian(0.001)", bias_init="zeros", ...)
and a seed; seed=None draws from the global generator that cnnkit.manual_seed(s) resets.
"""
import math
import re

import numpy as np

_global_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Reset the global generator that layers built with ``seed=None`` draw their initial weights from."""
    global _global_rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _global_rng = np.random.default_rng(int(seed))


def rng_for(seed):
    """The generator a layer initialises from: its own when seeded, else the global one."""
    return _global_rng if seed is None else np.random.default_rng(seed)


class Initializer:
    """fn(shape, fan_in, fan_out, rng, dtype) -> array. ``spec`` is the string that rebuilds it."""
    spec = "?"

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        raise NotImplementedError

    def __repr__(self):
        return self.spec


class He(Initializer):
    """Kaiming normal, fan_in mode: std = sqrt(2 / fan_in), for ReLU nets (He et al. 2015), or uniform
    on [-b, b] with b = sqrt(6 / fan_in) (same variance)."""

    def __init__(self, uniform=False):
        self.uniform = uniform
        self.spec = "he_uniform" if uniform else "he"

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        if self.uniform:
            b = math.sqrt(6.0 / fan_in)
            return rng.uniform(-b, b, size=shape).astype(dtype)
        return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


class Xavier(Initializer):
    """Glorot: uniform on [-b, b], b = sqrt(6 / (fan_in + fan_out)) (the paper's normalised init, as
    torch.nn.init.xavier_uniform_), or normal with std = sqrt(2 / (fan_in + fan_out))."""

    def __init__(self, uniform=True):
        self.uniform = uniform
        self.spec = "xavier" if uniform else "xavier_normal"

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        if self.uniform:
            b = math.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-b, b, size=shape).astype(dtype)
        return (rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


class Gaussian(Initializer):
    """The lecture's small random numbers: N(0, std^2), std 0.01 by default (0.001 is the other one shown).
    Fine for small nets; activations shrink layer by layer in deep ones, which is why He init exists."""

    def __init__(self, std=0.01):
        self.std = float(std)
        self.spec = f"gaussian({self.std!r})"

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return (rng.standard_normal(shape) * self.std).astype(dtype)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = float(value)
        self.spec = "zeros" if self.value == 0.0 else "ones" if self.value == 1.0 else f"constant({self.value!r})"

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return np.full(shape, self.value, dtype=dtype)


def Zeros():
    return Constant(0.0)


_NAMED = {"he": lambda: He(), "kaiming": lambda: He(), "he_uniform": lambda: He(uniform=True),
          "kaiming_uniform": lambda: He(uniform=True), "xavier": lambda: Xavier(), "glorot": lambda: Xavier(),
          "xavier_uniform": lambda: Xavier(), "xavier_normal": lambda: Xavier(uniform=False),
          "glorot_normal": lambda: Xavier(uniform=False), "gaussian": lambda: Gaussian(0.01),
          "small": lambda: Gaussian(0.01), "zeros": lambda: Constant(0.0), "ones": lambda: Constant(1.0)}


def get(spec):
    """An Initializer from a spec string or an Initializer (returned as is)."""
    if isinstance(spec, Initializer):
        return spec
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in _NAMED:
            return _NAMED[s]()
        m = re.fullmatch(r"(gaussian|constant)\(\s*([-+0-9.eE]+)\s*\)", s)
        if m:
            v = float(m.group(2))
            return Gaussian(v) if m.group(1) == "gaussian" else Constant(v)
    raise ValueError(f"init: unknown initialiser {spec!r}; expected one of {sorted(_NAMED)}, "
                     f"'gaussian(std)', 'constant(v)' or an Initializer")


def make(spec, shape, fan_in, fan_out, seed_or_rng, dtype):
    rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else rng_for(seed_or_rng)
    a = get(spec)(tuple(shape), fan_in, fan_out, rng, np.dtype(dtype))
    return np.ascontiguousarray(a, dtype=dtype)


__all__ = ["manual_seed", "Initializer", "He", "Xavier", "Gaussian", "Constant", "Zeros", "get"]
