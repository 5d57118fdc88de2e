"""Batching: shuffle from a seed, optional augmentation, prefetch on a background thread, resumable position.

Batch b of epoch e is a pure function of (seed, e, b): the epoch's order sorts Philox keys of
(seed, e, sample index) (stream 0; transforms use other streams), and augmentation draws from
(seed, e, sample index, stream). So saving ``state_dict()`` mid-epoch and loading it into a fresh loader
yields exactly the remaining batches, bit for bit, at any thread count. The background thread builds the
next batch while the caller trains on this one: the augmentation kernels release the GIL.

With ``device="cuda"`` a batch is gathered on the host as before, copied to the GPU in one copy (the
labels stay on the host: see _gather), and augmented there by the CUDA twin of the transforms, so it never returns
to the host. The device work of batch b is queued on the CuPy stream that was current (for that device) in the
iterating thread when the epoch's iteration started; the batch is handed out after that stream's event for it,
so a caller on another stream still reads finished data.
"""
import contextlib
import queue
import threading

import numpy as np

from .. import _C
from .._device import parse_device
from .._xp import is_device_array, require_cupy as _cupy
from ._common import ArrayDataset, check_int
from .transforms import Compose, Transform

__all__ = ["DataLoader", "as_loader"]


def epoch_permutation(n, seed, epoch):
    """The loader's order of n samples in `epoch`: argsort (stable) of 64-bit Philox keys."""
    op = "epoch_permutation"
    n, seed, epoch = (check_int(op, "n", n, minimum=0), check_int(op, "seed", seed, minimum=0),
                      check_int(op, "epoch", epoch, minimum=0))
    keys = np.empty(n, np.uint64)
    _C.philox_keys(keys, seed, epoch, 0)
    return np.argsort(keys, kind="stable").astype(np.int64)


class DataLoader:
    """Iterate over (x, y) batches of `dataset`.

    dataset: an ArrayDataset, a pair (x, y) of arrays with equal first dimensions, or any object with
    ``len()`` and ``ds[index_array] -> (x, y)``. shuffle: a new order each epoch from (seed, epoch).
    transform: called as ``transform(x, ids=indices, epoch=e, seed=seed, num_threads=n)`` (a Transform or
    Compose) or ``transform(x)`` (any other callable). prefetch: build the next batch on a background thread.
    num_threads: OpenMP threads for the transforms (default: cnnkit's setting when iteration starts).
    device: None or "cpu" (numpy batches), "cuda" (CuPy's current device) or "cuda:N": x is a CuPy array
    on that GPU (y stays a numpy array: the loss checks it on the host before copying it), augmented there
    (see the module docstring; the batches equal the CPU ones, bit for bit for
    flips, crops and colour jitter, within docs/kernels.md's tolerance for PCALighting and RandomAffine). A
    non-cnnkit transform then receives the CuPy batch. Needs CUDA: RuntimeError with cnnkit.cuda.status() if not.

    Each ``for`` loop runs the rest of the current epoch, then moves to the next one. ``state_dict()`` is the
    position after the batches handed out so far.
    """

    def __init__(self, dataset, batch_size, shuffle=True, seed=0, drop_last=False, transform=None, prefetch=True,
                 num_threads=None, device=None):
        op = "DataLoader"
        if isinstance(dataset, (tuple, list)):
            if len(dataset) != 2 or not all(isinstance(a, np.ndarray) for a in dataset):
                raise TypeError(f"{op}: dataset as a sequence must be a pair (x, y) of numpy arrays")
            if dataset[0].shape[0] != dataset[1].shape[0]:
                raise ValueError(f"{op}: dataset x and y must have the same length, got {dataset[0].shape[0]} "
                                 f"and {dataset[1].shape[0]}")
            self._x, self._y = dataset
            n = dataset[0].shape[0]
        elif isinstance(dataset, (np.ndarray, str, bytes)) or is_device_array(dataset):
            raise TypeError(f"{op}: dataset must be an ArrayDataset, a pair (x, y) or support len() and indexing, "
                            f"got a bare {type(dataset).__name__} (no labels); pass (x, y)")
        elif isinstance(dataset, ArrayDataset):
            self._x, self._y = dataset.x, dataset.y
            n = len(dataset)
        elif hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
            self._x = self._y = None
            n = len(dataset)
        else:
            raise TypeError(f"{op}: dataset must be an ArrayDataset, a pair (x, y) or support len() and indexing, "
                            f"got {type(dataset).__name__}")
        self.dataset = dataset
        self.n = int(n)
        self.batch_size = check_int(op, "batch_size", batch_size, minimum=1)
        for name, v in (("shuffle", shuffle), ("drop_last", drop_last), ("prefetch", prefetch)):
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{op}: {name} must be a bool, got {type(v).__name__}")
        self.shuffle, self.drop_last, self.prefetch = bool(shuffle), bool(drop_last), bool(prefetch)
        self.seed = check_int(op, "seed", seed, minimum=0)
        if self.seed >= 2**64:
            raise ValueError(f"{op}: seed must be < 2**64, got {self.seed}")
        if transform is not None and not callable(transform):
            raise TypeError(f"{op}: transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.num_threads = None if num_threads is None else check_int(op, "num_threads", num_threads, minimum=1)
        self.device = device
        self._device_id = parse_device(device, op, allow_none=True)
        self.epoch = 0
        self._batch = 0  # batches of this epoch handed out
        self.sampler = None  # this rank's part of each order, with .num_samples(n) (cnnkit.distributed)

    def __len__(self):
        """Batches per epoch."""
        n = self.n if self.sampler is None else self.sampler.num_samples(self.n)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        """Jump to the start of `epoch`."""
        self.epoch = check_int("DataLoader.set_epoch", "epoch", epoch, minimum=0)
        self._batch = 0

    def state_dict(self):
        """JSON-able position: the next batch to hand out, plus the settings it depends on."""
        epoch, batch = self.epoch, self._batch
        if batch >= len(self):
            epoch, batch = epoch + 1, 0
        return {"epoch": epoch, "batch": batch, "seed": self.seed, "n": self.n, "batch_size": self.batch_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state):
        """Resume at a saved position; the loader's settings must match the ones saved."""
        op = "DataLoader.load_state_dict"
        if not isinstance(state, dict):
            raise TypeError(f"{op}: state must be a dict, got {type(state).__name__}")
        for k in ("seed", "n", "batch_size", "shuffle", "drop_last"):
            if k in state and state[k] != getattr(self, k):
                raise ValueError(f"{op}: saved {k}={state[k]!r} differs from this loader's {getattr(self, k)!r}")
        epoch = check_int(op, "epoch", state.get("epoch"), minimum=0)
        batch = check_int(op, "batch", state.get("batch"), minimum=0)
        if batch > len(self):
            raise ValueError(f"{op}: batch must be <= {len(self)} (batches per epoch), got {batch}")
        self.epoch, self._batch = epoch, batch

    def order(self, epoch):
        """Sample indices of `epoch` in the order they are served."""
        order = epoch_permutation(self.n, self.seed, epoch) if self.shuffle else np.arange(self.n, dtype=np.int64)
        return order if self.sampler is None else self.sampler(order)

    def _make_batch(self, order, epoch, b, num_threads, scratch=None):
        """Batch b of `epoch`. `scratch` (a dict owned by one iteration) keeps the gather buffer between
        batches: when a transform follows, the gathered images are only its input, and reusing their memory
        saves a fresh multi-MB allocation (page faults) per batch."""
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        if self._x is None:
            x, y = self.dataset[idx]
            x = np.ascontiguousarray(x)
        else:
            y = self._y[idx]
            shape = (len(idx),) + self._x.shape[1:]
            buf = None if scratch is None or self.transform is None else scratch.get(shape)
            if buf is None:
                x = np.take(self._x, idx, axis=0)
                if scratch is not None and self.transform is not None:
                    scratch.clear()
                    scratch[shape] = x
            else:
                x = np.take(self._x, idx, axis=0, out=buf)
        if self._device_id is not None:
            # One copy of the batch; the host buffer is consumed when asarray returns (CuPy stages it through
            # pinned memory or copies synchronously), so `scratch` may be reused. The labels stay on the host:
            # the loss checks their range there before its one copy over, which on the device would need a
            # read back every step.
            x = _cupy().asarray(x)
        if self.transform is not None:
            gathered = x
            if isinstance(self.transform, (Transform, Compose)):
                x = self.transform(x, ids=idx, epoch=epoch, seed=self.seed, num_threads=num_threads)
            else:
                x = self.transform(x)
            if scratch is not None and isinstance(x, np.ndarray) and np.may_share_memory(x, gathered):
                x = x.copy()  # the transform handed back (a view of) its input: never hand out the buffer
        return x, y

    def _on_device(self, stream):
        """The context batches are made in: nothing on the CPU; on a GPU its device and `stream`."""
        if self._device_id is None:
            return contextlib.nullcontext()
        ctx = contextlib.ExitStack()
        ctx.enter_context(_cupy().cuda.Device(self._device_id))
        if stream is not None:
            ctx.enter_context(stream)
        return ctx

    def __iter__(self):
        epoch, start, nb = self.epoch, self._batch, len(self)
        if start >= nb:  # the previous epoch was fully handed out
            epoch, start = epoch + 1, 0
            self.epoch, self._batch = epoch, 0
        order = self.order(epoch)
        nt = self.num_threads or _C.get_num_threads()
        scratch = {}
        if not self.prefetch:  # device work goes on the caller's current stream at each batch
            for b in range(start, nb):
                with self._on_device(None):
                    batch = self._make_batch(order, epoch, b, nt, scratch)
                self._batch = b + 1
                yield batch
        else:
            stream = None
            if self._device_id is not None:
                with _cupy().cuda.Device(self._device_id):
                    stream = _cupy().cuda.get_current_stream()
            yield from self._iter_prefetch(order, epoch, start, nb, nt, scratch, stream)
        self.epoch, self._batch = epoch + 1, 0

    def _iter_prefetch(self, order, epoch, start, nb, nt, scratch, stream=None):
        q = queue.Queue(maxsize=1)
        stop = threading.Event()

        def put(item):
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        def produce():
            try:
                with self._on_device(stream):
                    for b in range(start, nb):
                        batch = self._make_batch(order, epoch, b, nt, scratch)
                        ready = None
                        if stream is not None:  # the batch is complete on `stream` once this event has fired
                            ready = _cupy().cuda.Event(disable_timing=True)
                            ready.record(stream)
                        if not put(("ok", (batch, ready))):
                            return
            except BaseException as e:  # handed to the consumer, raised there
                put(("error", e))

        worker = threading.Thread(target=produce, name="cnnkit-prefetch", daemon=True)
        worker.start()
        try:
            for b in range(start, nb):
                kind, item = q.get()
                if kind == "error":
                    raise item
                batch, ready = item
                if ready is not None:  # the caller's stream waits on the GPU, the host does not
                    with _cupy().cuda.Device(self._device_id):
                        _cupy().cuda.get_current_stream().wait_event(ready)
                self._batch = b + 1
                yield batch
        finally:
            stop.set()
            worker.join()


def as_loader(data, batch_size=64, shuffle=False, seed=0, transform=None, device=None):
    """A DataLoader from a DataLoader (returned as it is), an (x, y) pair or a dataset supporting len() and
    indexing; None stays None. device: the model's ("cuda:N" puts each batch there, on the loader's prefetch
    thread, which a shuffled loader has)."""
    if isinstance(data, DataLoader):
        return data
    if data is None:
        return None
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, seed=seed, transform=transform,
                      prefetch=shuffle, device=None if device == "cpu" else device)
