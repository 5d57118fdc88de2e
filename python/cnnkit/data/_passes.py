"""A loader's position, as torch's DataLoader with a sampler that reshuffles each pass sees it: every
``iter(loader)`` is a fresh pass over one epoch (the epoch after the previous pass's, unless ``set_epoch`` or
``load_state_dict`` named where the next one begins), and ``state_dict()`` is the position in the latest pass.
Shared by cnnkit's DataLoader and the wrapper around a torch DataLoader (torch_loader.py)."""
from ._common import check_int


class Passes:
    """Position bookkeeping for a loader with ``len()`` batches per epoch. A subclass calls _init_position()
    and, in __iter__, _begin_pass(), which returns the pass's mutable [epoch, batches handed out]."""

    def _init_position(self):
        self._next = (0, 0)   # where the next pass begins: (epoch, batch)
        self._live = None     # [epoch, batches handed out] of the latest pass; None while _next is pending

    @property
    def epoch(self):
        """The epoch of the position ``state_dict()`` reports."""
        return self.state_dict()["epoch"]

    def set_epoch(self, epoch):
        """The next pass runs `epoch` from its first batch (the ones after it run epoch + 1, ...)."""
        self._next = (check_int(f"{type(self).__name__}.set_epoch", "epoch", epoch, minimum=0), 0)
        self._live = None

    def _begin_pass(self):
        epoch, start = self._next
        if 0 < start >= len(self):   # a position saved after a pass's last batch: the next epoch begins
            epoch, start = epoch + 1, 0
        self._next = (epoch + 1, 0)
        self._live = [epoch, start]
        return self._live

    def _position(self):
        """(epoch, batch) of the next batch to hand out: in the latest pass, or where the next one begins."""
        if self._live is None:
            (epoch, batch), done = self._next, 0 < self._next[1] >= len(self)
        else:
            (epoch, batch), done = self._live, self._live[1] >= len(self)
        return (epoch + 1, 0) if done else (epoch, batch)

    def _load_position(self, op, state):
        """Check state's epoch and batch, and make them where the next pass begins."""
        if not isinstance(state, dict):
            raise TypeError(f"{op}: state must be a dict, got {type(state).__name__}")
        epoch = check_int(op, "epoch", state.get("epoch"), minimum=0)
        batch = check_int(op, "batch", state.get("batch"), minimum=0)
        if batch > len(self):
            raise ValueError(f"{op}: batch must be <= {len(self)} (batches per epoch), got {batch}")
        self._next, self._live = (epoch, batch), None
