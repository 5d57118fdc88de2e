"""Shared pieces of cnnkit.data: the in-memory dataset type, the bad-file error, argument checks."""
import os

import numpy as np


from .._validate import check_float, check_int  # noqa: F401  (re-exported to the data modules)
from .._xp import is_device_array


class DataFormatError(ValueError):
    """A data file is truncated, corrupt or mislabelled. The message names the file and what was wrong."""

    def __init__(self, path, what):
        self.path = os.fspath(path) if path is not None else None
        self.what = what
        super().__init__(f"{self.path}: {what}" if self.path is not None else what)


class ArrayDataset:
    """Images and labels held in memory: ``x`` (N, C, H, W) and ``y`` (N,) int64.

    ``ds[idx]`` with an int, a slice or an index array returns ``(x[idx], y[idx])``. ``classes`` names
    the labels when the format says (else it is None).
    """

    def __init__(self, x, y, classes=None):
        op = "ArrayDataset"
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{op}: x must be a numpy.ndarray, got {type(x).__name__}")
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{op}: y must be a numpy.ndarray, got {type(y).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{op}: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{op}: y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"{op}: y must hold integer labels, got dtype {y.dtype}")
        self.x = x
        self.y = y.astype(np.int64, copy=False)
        self.classes = list(classes) if classes is not None else None

    def __len__(self):
        return int(self.x.shape[0])

    def __getitem__(self, idx):
        return self.x[idx], self.y[idx]

    def __iter__(self):  # (x, y) unpacking: x, y = ds
        return iter((self.x, self.y))

    def __repr__(self):
        return (f"ArrayDataset(x={tuple(self.x.shape)} {self.x.dtype}, y={tuple(self.y.shape)}, "
                f"classes={len(self.classes) if self.classes is not None else None})")


def from_torch(a):
    """A torch tensor as a numpy array, sharing its memory when it is on the CPU (Tensor.numpy()); anything else
    as it is. The tensor is recognised by its type's module, so torch is never imported here."""
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    return a


def check_range(op, name, v, positive=False):
    """A pair (lo, hi) of numbers with lo <= hi (and lo > 0 when positive)."""
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise TypeError(f"{op}: {name} must be a pair (lo, hi), got {v!r}")
    lo, hi = (check_float(op, name, e) for e in v)
    if lo > hi or (positive and lo <= 0):
        raise ValueError(f"{op}: {name} must satisfy {'0 < ' if positive else ''}lo <= hi, got ({lo}, {hi})")
    return lo, hi


def check_images(op, name, x, device=False):
    """x must be a C-contiguous float32/float64 (N, C, H, W) numpy array; with device=True a CuPy array is
    accepted too, once CUDA is found usable (else cnnkit.cuda's RuntimeError naming op)."""
    lib = "numpy"
    if device and is_device_array(x):
        from .. import cuda
        cuda.require(op)
        lib = "cupy"
    elif not isinstance(x, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} must be float32 or float64, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{op}: {name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (use {lib}.ascontiguousarray)")
    return x
