"""Scalar argument checks shared by the whole package: each names the operation and the argument, says what
was expected and what came, and raises TypeError (wrong type) or ValueError (out of range).

Imports nothing of cnnkit, so any module may use it without an import cycle.
"""
import numbers

import numpy as np


def check_int(op, name, v, minimum=None):
    """An int (numpy integers too; not a bool), >= minimum when given."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
    return v


def check_float(op, name, v, lo=None, hi=None):
    """A finite real number (not a bool), within [lo, hi] when given."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{op}: {name} must be finite, got {v}")
    if lo is not None and v < lo:
        raise ValueError(f"{op}: {name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{op}: {name} must be <= {hi}, got {v}")
    return v


def check_flag(op, name, v):
    """A flag argument: a bool or numpy.bool_. Anything else is refused, since bool("no") is True."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(v).__name__}")
    return bool(v)


# ---------------------------------------------------------------- optimizer and schedule hyperparameters
# Real numbers that may be infinite (an lr bound, a clip threshold), refused when NaN; the messages name the
# bound as "invalid <name> <value> (must be ...)".

def check_real(op, name, v):
    """A real number (not a bool), not NaN; infinities pass."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if np.isnan(v):
        raise ValueError(f"{op}: {name} must not be NaN")
    return v


def check_nonneg(op, name, v):
    """A real number >= 0 (check_real first)."""
    v = check_real(op, name, v)
    if v < 0:
        raise ValueError(f"{op}: invalid {name} {v} (must be >= 0)")
    return v


def check_positive(op, name, v):
    """A real number > 0 (check_real first)."""
    v = check_real(op, name, v)
    if not v > 0:
        raise ValueError(f"{op}: invalid {name} {v} (must be > 0)")
    return v


def check_unit(op, name, v):
    """A real number in [0, 1) (check_real first): a moment's decay rate."""
    v = check_real(op, name, v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{op}: invalid {name} {v} (must be in [0, 1))")
    return v


def check_bounded(op, name, v, lo=None, lo_open=False, hi=None, hi_open=False):
    """A real number (not a bool, not NaN) within the given bounds, each closed or open."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if np.isnan(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or \
            (hi is not None and (v >= hi if hi_open else v > hi)):
        lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
        raise ValueError(f"{op}: invalid {name} {v} (must be {' and '.join(s for s in (lo_s, hi_s) if s)})")
    return v


def check_count(op, name, v, lo):
    """An int (not a bool) >= lo, refused as "invalid <name> <value> (must be >= lo)"."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{op}: invalid {name} {v} (must be >= {lo})")
    return int(v)


# ---------------------------------------------------------------- layer constructor arguments

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_positive_int(op, name, v):
    """An int (numpy integers too; not a bool) >= 1; ValueError otherwise (as the layers report it)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    return int(v)


def check_prob(op, p, hi_inclusive=False):
    """A drop probability p: a real number (not a bool) in [0, 1), or [0, 1] with hi_inclusive."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: p must be a float, got {type(p).__name__}")
    p = float(p)
    if not (0.0 <= p < 1.0 or (hi_inclusive and p == 1.0)):
        raise ValueError(f"{op}: p (the drop probability) must be in [0, 1{']' if hi_inclusive else ')'}, got {p}")
    return p


def check_float_dtype(op, dtype):
    """A dtype (anything np.dtype takes) that is float32 or float64."""
    dtype = np.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype}")
    return dtype
