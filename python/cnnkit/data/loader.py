"""Batching: shuffle from a seed, optional augmentation, batches built by background worker threads, resumable
position.

Batch b of epoch e is a pure function of (seed, e, b): the epoch's order sorts Philox keys of
(seed, e, sample index) (stream 0; transforms use other streams), and augmentation draws from
(seed, e, sample index, stream). So the batches are the same for any num_workers and thread count, and saving
``state_dict()`` mid-epoch and loading it into a fresh loader yields exactly the remaining batches, bit for
bit. Workers are threads, not processes: the augmentation kernels (cnnkit.ops.augment) and numpy's gather
release the GIL, so N threads build N batches at once without pickling anything across processes.

With ``device="cuda"`` a batch is gathered on the host as before, copied to the GPU in one copy (the
labels stay on the host: see _make_batch), and augmented there by the CUDA twin of the transforms, so it never
returns to the host. The device work of batch b is queued on the CuPy stream that was current (for that device)
in the iterating thread when the pass started; the batch is handed out after that stream's event for it,
so a caller on another stream still reads finished data.
"""
import contextlib
import queue
import threading

import numpy as np

from .. import _C
from .. import profiler as _profiler
from .._device import parse_device
from .._validate import check_flag
from .._xp import is_device_array, require_cupy as _cupy
from ._common import ArrayDataset, check_int
from ._passes import Passes
from .torch_loader import TorchLoader, is_torch_loader
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


class DataLoader(Passes):
    """Iterate over (x, y) batches of `dataset`, as torch.utils.data.DataLoader does.

    dataset: an ArrayDataset, a pair (x, y) of arrays with equal first dimensions, or any object with
    ``len()`` and ``ds[index_array] -> (x, y)`` (``ds[i]`` per sample when collate_fn is given).
    shuffle: a new order each epoch from (seed, epoch); False (torch's default) serves 0..N-1.
    transform: called as ``transform(x, ids=indices, epoch=e, seed=seed, num_threads=n)`` (a Transform or
    Compose) or ``transform(x)`` (any other callable, e.g. Normalize).
    num_workers: threads that build batches in the background (the module docstring says why threads); each
    keeps up to `prefetch_factor` (default 2) finished batches ready. The batches, their order and their
    values do not depend on num_workers: worker w builds batches w, w + N, ... of the pass, each a pure
    function of (seed, epoch, batch index), and they are handed out in order. 0 builds each batch in the
    iterating thread when it is asked for. Default: 1 if `prefetch` else 0 (prefetch is the older spelling of
    num_workers=1; an explicit num_workers wins). An exception in a worker is raised in the iterating thread,
    the same object (so its type and traceback); a pass that is abandoned (break, del, garbage) stops and
    joins its workers. The OpenMP threads of the transforms (`num_threads`, default cnnkit's setting when the
    pass starts) are split between the workers.
    collate_fn: as torch's: called with the list of per-sample items ``[(x_i, y_i), ...]`` of a batch; what it
    returns is the batch (transform and device then apply to its x, so it must return (x, y)). Default: the
    vectorised path, one gather of the whole batch (no per-sample Python).
    pin_memory: accepted for torch code; a no-op (batches are numpy arrays in ordinary memory; a GPU copy is
    staged by CuPy).
    device: None or "cpu" (numpy batches), "cuda" (CuPy's current device) or "cuda:N": x is a CuPy array
    on that GPU (y stays a numpy array: the loss checks it on the host before copying it), augmented there
    (see the module docstring; the batches equal the CPU ones, bit for bit for
    flips, crops and colour jitter, within docs/kernels.md's tolerance for PCALighting and RandomAffine). A
    non-cnnkit transform then receives the CuPy batch. Needs CUDA: RuntimeError with cnnkit.cuda.status() if not.

    Passes, as torch's: each ``iter(loader)`` (each ``for`` loop) is a fresh pass from the epoch's first batch,
    the epoch after the previous pass's, so a loader reshuffles every pass as a torch RandomSampler does; two
    ``next(iter(loader))`` peeks use up two epochs and leave the following loop a whole one. ``set_epoch(e)``
    makes the next pass epoch e (as a DistributedSampler's set_epoch; without it the passes count 0, 1, ...).
    ``state_dict()`` is the position after the batches handed out so far in the latest pass;
    ``load_state_dict(state)`` makes the next pass begin there (the rest of that epoch, bit for bit).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, seed=0, drop_last=False, transform=None,
                 prefetch=True, num_threads=None, device=None, num_workers=None, prefetch_factor=None,
                 collate_fn=None, pin_memory=False):
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
        self.shuffle, self.drop_last = check_flag(op, "shuffle", shuffle), check_flag(op, "drop_last", drop_last)
        self.prefetch, self.pin_memory = check_flag(op, "prefetch", prefetch), check_flag(op, "pin_memory", pin_memory)
        self.seed = check_int(op, "seed", seed, minimum=0)
        if self.seed >= 2**64:
            raise ValueError(f"{op}: seed must be < 2**64, got {self.seed}")
        for name, f in (("transform", transform), ("collate_fn", collate_fn)):
            if f is not None and not callable(f):
                raise TypeError(f"{op}: {name} must be callable or None, got {type(f).__name__}")
        self.transform, self.collate_fn = transform, collate_fn
        self.num_threads = None if num_threads is None else check_int(op, "num_threads", num_threads, minimum=1)
        self.num_workers = (int(self.prefetch) if num_workers is None
                            else check_int(op, "num_workers", num_workers, minimum=0))
        if prefetch_factor is not None and self.num_workers == 0:
            raise ValueError(f"{op}: prefetch_factor needs num_workers > 0 (batches kept ready per worker), got "
                             f"prefetch_factor={prefetch_factor!r} with num_workers=0")
        self.prefetch_factor = 2 if prefetch_factor is None else check_int(op, "prefetch_factor", prefetch_factor,
                                                                          minimum=1)
        self.device = device
        self._device_id = parse_device(device, op, allow_none=True)
        self._init_position()
        self.sampler = None  # this rank's part of each order, with .num_samples(n) (cnnkit.distributed)

    def __len__(self):
        """Batches per epoch."""
        n = self.n if self.sampler is None else self.sampler.num_samples(self.n)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self):
        """JSON-able position: the next batch to hand out, plus the settings it depends on."""
        epoch, batch = self._position()
        return {"epoch": epoch, "batch": batch, "seed": self.seed, "n": self.n, "batch_size": self.batch_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state):
        """Make the next pass resume at a saved position; the loader's settings must match the ones saved."""
        op = "DataLoader.load_state_dict"
        if isinstance(state, dict):
            for k in ("seed", "n", "batch_size", "shuffle", "drop_last"):
                if k in state and state[k] != getattr(self, k):
                    raise ValueError(f"{op}: saved {k}={state[k]!r} differs from this loader's {getattr(self, k)!r}")
        self._load_position(op, state)

    def order(self, epoch):
        """Sample indices of `epoch` in the order they are served."""
        order = epoch_permutation(self.n, self.seed, epoch) if self.shuffle else np.arange(self.n, dtype=np.int64)
        return order if self.sampler is None else self.sampler(order)

    def _item(self, i):
        """Sample i as the dataset gives it, for collate_fn."""
        return (self._x[i], self._y[i]) if self._x is not None else self.dataset[i]

    def _gather(self, idx, scratch):
        """(x, y) of the samples idx in one gather. `scratch` (a dict owned by one worker) keeps the gather
        buffer between batches: when a transform follows, the gathered images are only its input, and reusing
        their memory saves a fresh multi-MB allocation (page faults) per batch."""
        if self._x is None:
            x, y = self.dataset[idx]
            return np.ascontiguousarray(x), y
        y = self._y[idx]
        shape = (len(idx),) + self._x.shape[1:]
        buf = None if scratch is None or self.transform is None else scratch.get(shape)
        if buf is not None:
            return np.take(self._x, idx, axis=0, out=buf), y
        x = np.take(self._x, idx, axis=0)
        if scratch is not None and self.transform is not None:
            scratch.clear()
            scratch[shape] = x
        return x, y

    @_profiler.traced("DataLoader.batch", "data")   # a range per batch while a profile records
    def _make_batch(self, order, epoch, b, num_threads, scratch=None):
        """Batch b of `epoch`."""
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        if self.collate_fn is not None:
            batch = self.collate_fn([self._item(int(i)) for i in idx])
            if self.transform is None and self._device_id is None:
                return batch
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(f"DataLoader: collate_fn must return a pair (x, y) when a transform or a device is "
                                f"set, got {type(batch).__name__}")
            x, y = batch
            scratch = None   # x is collate_fn's, not a reused buffer
        else:
            x, y = self._gather(idx, scratch)
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
        """A fresh pass (see the class docstring)."""
        return self._pass(self._begin_pass())

    def _pass(self, pos):
        epoch, start = pos
        nb = len(self)
        order = self.order(epoch)
        nt = self.num_threads or _C.get_num_threads()
        if self.num_workers == 0:  # device work goes on the caller's current stream at each batch
            scratch = {}
            for b in range(start, nb):
                with self._on_device(None):
                    batch = self._make_batch(order, epoch, b, nt, scratch)
                pos[1] = b + 1
                yield batch
            return
        stream = None
        if self._device_id is not None:
            with _cupy().cuda.Device(self._device_id):
                stream = _cupy().cuda.get_current_stream()
        yield from self._pass_workers(pos, order, epoch, start, nb, max(1, nt // self.num_workers), stream)

    def _pass_workers(self, pos, order, epoch, start, nb, nt, stream):
        """Batches start..nb-1 built by num_workers threads, worker w taking every num_workers-th from start + w
        into its own queue (torch's round robin), handed out in order."""
        nw = self.num_workers
        queues = [queue.Queue(maxsize=self.prefetch_factor) for _ in range(nw)]
        stop = threading.Event()

        def put(q, item):
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        def work(w):
            q, scratch = queues[w], {}
            try:
                with self._on_device(stream):
                    for b in range(start + w, nb, nw):
                        if stop.is_set():
                            return
                        batch = self._make_batch(order, epoch, b, nt, scratch)
                        ready = None
                        if stream is not None:  # the batch is complete on `stream` once this event has fired
                            ready = _cupy().cuda.Event(disable_timing=True)
                            ready.record(stream)
                        if not put(q, ("ok", (batch, ready))):
                            return
            except BaseException as e:  # handed to the consumer, raised there
                put(q, ("error", e))

        workers = [threading.Thread(target=work, args=(w,), name=f"cnnkit-loader-{w}", daemon=True)
                   for w in range(min(nw, max(nb - start, 0)))]
        for t in workers:
            t.start()
        try:
            for b in range(start, nb):
                kind, item = queues[(b - start) % nw].get()
                if kind == "error":
                    raise item
                batch, ready = item
                if ready is not None:  # the caller's stream waits on the GPU, the host does not
                    with _cupy().cuda.Device(self._device_id):
                        _cupy().cuda.get_current_stream().wait_event(ready)
                pos[1] = b + 1
                yield batch
        finally:
            stop.set()
            for t in workers:
                t.join()


def as_loader(data, batch_size=64, shuffle=False, seed=0, transform=None, device=None):
    """A loader for `data`: a DataLoader (returned as it is), a torch DataLoader (wrapped in a TorchLoader,
    which hands out numpy batches), an (x, y) pair or a dataset supporting len() and indexing; None stays
    None. device: the model's ("cuda:N" puts each batch there, on the loader's worker thread, which a shuffled
    loader has)."""
    if isinstance(data, (DataLoader, TorchLoader)):
        return data
    if data is None:
        return None
    if is_torch_loader(data):
        return TorchLoader(data)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, seed=seed, transform=transform,
                      prefetch=shuffle, device=None if device == "cpu" else device)
