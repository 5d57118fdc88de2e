"""Trainer.fit and evaluate on a torch.utils.data.DataLoader: TorchLoader hands out its batches as numpy arrays
(no copy for contiguous float32 CPU tensors) and keeps a cnnkit loader's position (_passes.py) so that
checkpoints record where a run is. torch is never imported: a torch loader and tensor are recognised by their
types' modules."""
import numpy as np

from ._common import from_torch
from ._passes import Passes

__all__ = ["TorchLoader", "is_torch_loader"]


def is_torch_loader(obj):
    """True for a torch.utils.data.DataLoader (or a subclass), judged by the classes' names and modules."""
    return any(c.__name__ == "DataLoader" and c.__module__.startswith("torch.utils.data") for c in type(obj).__mro__)


class TorchLoader(Passes):
    """A torch DataLoader yielding (x, y) batches of torch tensors or numpy arrays, as (x, y) numpy batches.

    x comes from ``Tensor.numpy()``, sharing the tensor's memory when it is a contiguous CPU tensor (a GPU
    tensor is copied to the host, a strided one made contiguous); its dtype is kept, so give the model the
    float32 it trains in. y likewise. Passes count epochs as cnnkit's DataLoader does, and before each pass a
    sampler with ``set_epoch`` (torch's DistributedSampler) is told the epoch, as Lightning does.

    Resume: ``state_dict()`` is (epoch, batch) of the latest pass; after ``load_state_dict`` the next pass
    draws its first `batch` batches again and drops them. So a resumed run reproduces the uninterrupted one
    bit for bit only when the torch loader gives the same batches for that epoch in a fresh process: no
    shuffle (or a DistributedSampler, whose order is a function of its seed and the epoch) and transforms that
    draw no random numbers. A ``shuffle=True`` loader reshuffles from torch's generator, and random transforms
    draw from per-worker seeds; neither is in a checkpoint, so the resumed epoch's remaining batches then come
    from a different permutation (some samples seen twice in that epoch, some not at all) and different
    augmentation. The model, optimizer, schedule and counters are restored exactly in any case.
    """

    def __init__(self, loader):
        op = "TorchLoader"
        if not is_torch_loader(loader):
            raise TypeError(f"{op}: loader must be a torch.utils.data.DataLoader, got {type(loader).__name__}")
        try:
            self._len = len(loader)
        except TypeError:
            raise TypeError(f"{op}: the torch DataLoader must have a length (a map-style dataset, or an "
                            f"IterableDataset with __len__), got one over {type(loader.dataset).__name__}") from None
        self.loader, self.dataset = loader, loader.dataset
        self._init_position()

    def __len__(self):
        """Batches per epoch (the torch loader's len)."""
        return self._len

    def state_dict(self):
        """JSON-able position: the next batch to hand out, and the batches per epoch it was counted in."""
        epoch, batch = self._position()
        return {"epoch": epoch, "batch": batch, "batches": len(self), "source": "torch"}

    def load_state_dict(self, state):
        """Make the next pass resume at a saved position (see the class docstring for when that is exact)."""
        op = "TorchLoader.load_state_dict"
        if isinstance(state, dict) and state.get("batches", len(self)) != len(self):
            raise ValueError(f"{op}: saved batches={state['batches']!r} (per epoch) differs from this loader's "
                             f"{len(self)}")
        self._load_position(op, state)

    def __iter__(self):
        """A fresh pass: a fresh iterator of the torch loader."""
        return self._pass(self._begin_pass())

    def _pass(self, pos):
        epoch, start = pos
        sampler = getattr(self.loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)
        for b, batch in enumerate(self.loader):
            if b < start:
                continue   # the resumed pass's batches already trained on
            x, y = _numpy_batch(batch)
            pos[1] = b + 1
            yield x, y


def _numpy_batch(batch):
    """(x, y) numpy arrays from one torch batch: x without a copy when it is contiguous on the CPU."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        what = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else \
            type(batch).__name__
        raise TypeError(f"TorchLoader: the torch DataLoader must yield (x, y) pairs, got {what}")
    x, y = (from_torch(a) for a in batch)
    for name, a in (("x", x), ("y", y)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"TorchLoader: batch {name} must be a torch.Tensor or numpy.ndarray, got "
                            f"{type(a).__name__}")
    return np.ascontiguousarray(x), y
