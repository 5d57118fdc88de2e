"""torch.utils.data's TensorDataset, Subset and random_split on numpy arrays. Indexing takes an int, a slice or
an index array (what a DataLoader passes for a batch) and returns a tuple, one entry per array."""
import math
import numbers

import numpy as np

from .._validate import check_int
from ._common import from_torch


def _as_array(op, i, a):
    a = from_torch(a)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: arrays[{i}] must be a numpy array (or a torch tensor), got {type(a).__name__}")
    return a


class TensorDataset:
    """Arrays of one length indexed together, as torch's TensorDataset: ``ds[idx] == (a[idx], b[idx], ...)``.
    ``TensorDataset(x, y)`` is a dataset for a DataLoader or the Trainer."""

    def __init__(self, *arrays):
        op = "TensorDataset"
        if not arrays:
            raise TypeError(f"{op}: needs at least one array")
        self.tensors = tuple(_as_array(op, i, a) for i, a in enumerate(arrays))
        n = len(self.tensors[0]) if self.tensors[0].ndim else None
        for i, a in enumerate(self.tensors):
            if a.ndim == 0 or len(a) != n:
                raise ValueError(f"{op}: every array must have the first one's length {n}, got arrays[{i}] of shape "
                                 f"{tuple(a.shape)}")

    def __len__(self):
        return len(self.tensors[0])

    def __getitem__(self, idx):
        return tuple(a[idx] for a in self.tensors)

    def __repr__(self):
        return f"TensorDataset({', '.join(str(tuple(a.shape)) for a in self.tensors)})"


class Subset:
    """The items of `dataset` at `indices`, in that order, as torch's Subset (``.dataset``, ``.indices``)."""

    def __init__(self, dataset, indices):
        op = "Subset"
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"{op}: dataset must support len() and indexing, got {type(dataset).__name__}")
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"{op}: indices must be a 1-D sequence of ints, got {getattr(indices, 'dtype', indices)!r}")
        idx = idx.astype(np.int64)
        n = len(dataset)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ValueError(f"{op}: indices must be in [-{n}, {n}) for a dataset of {n} items, got range "
                             f"[{idx.min()}, {idx.max()}]")
        self.dataset, self.indices = dataset, idx

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, idx):
        if isinstance(idx, numbers.Integral) and not isinstance(idx, bool):
            return self.dataset[int(self.indices[idx])]
        return self.dataset[self.indices[idx]]

    def __repr__(self):
        return f"Subset({len(self)} of {len(self.dataset)})"


def random_split(dataset, lengths, seed=0, generator=None):
    """Split `dataset` into non-overlapping Subsets of the given lengths, as torch's random_split: lengths are
    counts summing to len(dataset), or fractions summing to 1 (floor of each, the remainder handed out one by
    one from the first). The permutation comes from numpy with `seed`, or from a numpy `generator`."""
    op = "random_split"
    n = len(dataset)
    if not isinstance(lengths, (list, tuple)) or not lengths:
        raise TypeError(f"{op}: lengths must be a non-empty list of counts or fractions, got {lengths!r}")
    if all(isinstance(v, float) for v in lengths) and math.isclose(sum(lengths), 1.0) and sum(lengths) <= 1 + 1e-9:
        if any(not 0 <= v <= 1 for v in lengths):
            raise ValueError(f"{op}: fractions must be in [0, 1], got {lengths}")
        counts = [int(math.floor(n * v)) for v in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        counts = [check_int(op, "lengths", v, minimum=0) for v in lengths]
        if sum(counts) != n:
            raise ValueError(f"{op}: lengths must sum to the dataset's length {n} (or be fractions summing to 1), "
                             f"got {list(lengths)} (sum {sum(counts)})")
    if generator is not None and not isinstance(generator, np.random.Generator):
        raise TypeError(f"{op}: generator must be a numpy.random.Generator, got {type(generator).__name__}")
    rng = generator if generator is not None else np.random.default_rng(check_int(op, "seed", seed, minimum=0))
    perm = rng.permutation(n)
    out, start = [], 0
    for c in counts:
        out.append(Subset(dataset, perm[start:start + c]))
        start += c
    return out


__all__ = ["TensorDataset", "Subset", "random_split"]
