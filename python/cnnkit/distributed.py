"""Data-parallel training: one process per rank over MPI (mpi4py) on CPUs, NCCL (CuPy) between GPUs.

Each rank holds the whole model, trains on its shard of every batch (torch's DistributedSampler rule: rank r
takes positions r, r+N, r+2N, ... of the epoch's permutation) and averages the gradients over the flat
gradient buffers in ~25 MB buckets, started non-blocking as soon as backward has passed a bucket's layers
(PyTorch DDP's scheme, Li et al. 2020, "PyTorch Distributed"), so communication overlaps the rest of the
backward. Every wait has a watchdog; a rank that fails prints its error and aborts the job. docs/distributed.md.
"""
import contextlib
import importlib
import os
import sys
import time
import traceback

import numpy as np

from ._xp import array_module, is_device_array, require_cupy
from .layers import normalization as _norm
from .parameter import grad_ready_listeners

__all__ = ["init", "is_initialized", "rank", "world_size", "is_main", "barrier", "launched_world_size",
           "launched_local_size",
           "DistributedError", "DistributedSampler", "convert_sync_batchnorm", "shutdown"]

_MPI_EXTRA = 'cnnkit.distributed needs mpi4py and an MPI library: pip install "cnnkit[mpi]"'
DEFAULT_BUCKET_MB = 25.0     # PyTorch DDP's bucket_cap_mb
DEFAULT_TIMEOUT = 300.0      # seconds a collective may wait before the watchdog gives up on the other ranks

# Environment variables launchers set before Python starts: MPICH/Hydra and Intel MPI (PMI_*), Open MPI, Slurm.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


class DistributedError(RuntimeError):
    """A collective did not complete: another rank died, is stuck, or the ranks disagree."""


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(_MPI_EXTRA) from None
    return MPI


def _env_count(names):
    for var in names:
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return 1


def launched_world_size():
    """The number of ranks the launcher (mpiexec, srun) started, read from its environment without importing
    MPI; 1 outside a launcher."""
    return _env_count(_SIZE_VARS)


def launched_local_size():
    """The number of ranks the launcher started on this machine (1 outside a launcher or when it does not say)."""
    return _env_count(_LOCAL_SIZE_VARS)


class _Context:
    """The communicator and the watchdog: the one place that talks to MPI (and NCCL for device buffers)."""

    def __init__(self, comm, timeout):
        self.MPI = _mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = timeout
        self._nccl = None

    # ---------------------------------------------------------------- waits
    def wait(self, reqs, what):
        """Wait for MPI requests, polling, so a peer that never arrives is an error after `timeout` s, not a hang."""
        reqs = [r for r in reqs if r is not None]
        if not reqs:
            return
        deadline = time.monotonic() + self.timeout
        spins = 0
        while not self.MPI.Request.Testall(reqs):
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"cnnkit.distributed: rank {self.rank}/{self.size}: {what} did not complete within "
                    f"{self.timeout:g} s; another rank has probably died or stopped calling collectives")
            spins += 1
            if spins > 200:        # past the first microseconds, let other threads (the prefetcher) run
                time.sleep(5e-5)

    def progress(self, reqs):
        """Let MPICH move outstanding non-blocking collectives on (it has no progress thread by default)."""
        if reqs:
            self.MPI.Request.Testall(reqs)

    # ---------------------------------------------------------------- collectives
    def iallreduce(self, buf):
        """Start summing `buf` over the ranks in place; returns a request (None on a GPU: stream-ordered)."""
        if is_device_array(buf):
            self._device().allreduce(buf)
            return None
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def allreduce(self, buf, what):
        """Sum `buf` over the ranks in place, with the watchdog."""
        self.wait([self.iallreduce(buf)], what)
        return buf

    def broadcast(self, buf, what):
        """Overwrite `buf` with rank 0's values."""
        if is_device_array(buf):
            self._device().bcast(buf)
            return
        self.wait([self.comm.Ibcast(buf, root=0)], what)

    def barrier(self):
        self.wait([self.comm.Ibarrier()], "barrier")

    def _device(self):
        if self._nccl is None:
            self._nccl = NcclBackend(self)
        return self._nccl

    def abort(self, exc):
        """Print `exc` with this rank's number and end every rank of the job (MPI_Abort): the others would
        otherwise wait for this one at their next collective. On one rank: nothing (the error propagates)."""
        if self.size == 1:
            return
        head = f"cnnkit.distributed: rank {self.rank}/{self.size} failed; aborting all ranks"
        body = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        print(f"{head}\n{body}", file=sys.stderr, flush=True)
        self.comm.Abort(1)


class NcclBackend:
    """The all-reduce and broadcast of device (CuPy) buffers through NCCL (cupy.cuda.nccl), one process per
    GPU. The NCCL id goes from rank 0 to the others over MPI. Calls are queued on CuPy's current stream, so
    the optimizer step that follows on that stream sees the reduced gradients with no host wait."""

    def __init__(self, ctx):
        require_cupy()  # optional: only a device buffer reaches here
        nccl = importlib.import_module("cupy.cuda.nccl")
        self.nccl = nccl
        uid = nccl.get_unique_id() if ctx.rank == 0 else None
        uid = ctx.comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(ctx.size, uid, ctx.rank)

    def _args(self, buf):
        cupy = require_cupy()
        kinds = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32, np.dtype(np.float64): self.nccl.NCCL_FLOAT64,
                 np.dtype(np.int64): self.nccl.NCCL_INT64}
        if np.dtype(buf.dtype) not in kinds:
            raise TypeError(f"cnnkit.distributed: NCCL buffers must be float32, float64 or int64, got {buf.dtype}")
        return buf.data.ptr, int(buf.size), kinds[np.dtype(buf.dtype)], cupy.cuda.get_current_stream().ptr

    def allreduce(self, buf):
        ptr, n, dt, stream = self._args(buf)
        self.comm.allReduce(ptr, ptr, n, dt, self.nccl.NCCL_SUM, stream)

    def bcast(self, buf):
        ptr, n, dt, stream = self._args(buf)
        self.comm.bcast(ptr, n, dt, 0, stream)


_ctx = None


def init(comm=None, timeout=None, bucket_mb=DEFAULT_BUCKET_MB):
    """Join the job: `comm` (default MPI.COMM_WORLD) becomes cnnkit's communicator. timeout: seconds a
    collective may wait for the other ranks before failing (default 300, or CNNKIT_DIST_TIMEOUT). bucket_mb:
    the gradient all-reduce's bucket size (DDP's bucket_cap_mb). Installs an excepthook that aborts every rank
    when one raises uncaught. Returns the world size."""
    global _ctx
    MPI = _mpi()
    if timeout is None:
        timeout = float(os.environ.get("CNNKIT_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"distributed.init: timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float)) or not bucket_mb > 0:
        raise ValueError(f"distributed.init: bucket_mb must be a positive number of MB, got {bucket_mb!r}")
    comm = MPI.COMM_WORLD if comm is None else comm
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"distributed.init: comm must be an mpi4py communicator, got {type(comm).__name__}")
    _ctx = _Context(comm, float(timeout))
    _ctx.bucket_mb = float(bucket_mb)
    _norm._sync_reduce = _sync_bn_reduce
    if _ctx.size > 1 and not getattr(sys.excepthook, "_cnnkit_abort", False):
        previous = sys.excepthook

        def hook(kind, value, tb):
            if _ctx is not None and not issubclass(kind, (KeyboardInterrupt, SystemExit)):
                value.__traceback__ = tb
                _ctx.abort(value)
            previous(kind, value, tb)
        hook._cnnkit_abort = True
        sys.excepthook = hook
    return _ctx.size


def shutdown():
    """Leave the job (the communicator is dropped; MPI itself finalizes at exit)."""
    global _ctx
    _ctx = None
    _norm._sync_reduce = None


def is_initialized():
    """True after init() (until shutdown())."""
    return _ctx is not None


def rank():
    """This process's rank (0 when not initialized)."""
    return 0 if _ctx is None else _ctx.rank


def world_size():
    """The number of ranks (1 when not initialized)."""
    return 1 if _ctx is None else _ctx.size


def is_main():
    """True on rank 0, the one that prints and writes files."""
    return rank() == 0


def barrier():
    if _ctx is not None:
        _ctx.barrier()


def context():
    """The initialized context; RuntimeError naming init() otherwise."""
    if _ctx is None:
        raise RuntimeError("cnnkit.distributed: not initialized; call ck.distributed.init() first (under mpiexec)")
    return _ctx


def _sync_bn_reduce(a):
    """SyncBatchNorm's reduction: sum a (float64, host or device) over the ranks in place."""
    _ctx.allreduce(a, "SyncBatchNorm statistics")
    return a


# ---------------------------------------------------------------- sharding

class DistributedSampler:
    """This rank's part of an epoch's order, as torch.utils.data.DistributedSampler: the order is padded by
    repeating its first samples to a multiple of world_size (or, drop_last=True, cut to one), then rank r takes
    positions r, r+N, r+2N, ... So with per-rank batch B, step b's shards together are exactly the one-process
    batch b of size N*B. pad=False (evaluation) takes positions r, r+N, ... of the order as it is, so every
    sample is seen once and the shards may differ in length by one."""

    def __init__(self, rank, world_size, drop_last=False, pad=True):
        self.rank, self.world_size = int(rank), int(world_size)
        if not (self.world_size >= 1 and 0 <= self.rank < self.world_size):
            raise ValueError(f"DistributedSampler: need 0 <= rank < world_size, got rank {rank}, world_size "
                             f"{world_size}")
        self.drop_last, self.pad = bool(drop_last), bool(pad)

    def num_samples(self, n):
        N, r = self.world_size, self.rank
        if not self.pad:
            return max(0, -(-(n - r) // N))
        return n // N if self.drop_last else -(-n // N)

    def __call__(self, order):
        N = self.world_size
        if self.pad and not self.drop_last and len(order) % N:
            total = -(-len(order) // N) * N
            order = np.concatenate([order, np.resize(order, total - len(order))])
        elif self.pad:
            order = order[:len(order) // N * N]
        return order[self.rank::N]


def shard_loader(loader, pad=True):
    """Give `loader` (a DataLoader) this rank's shard of every epoch; returns it."""
    loader.sampler = DistributedSampler(rank(), world_size(), drop_last=loader.drop_last, pad=pad)
    return loader


def rescale_position(loader_state, old_world, new_world):
    """A loader position saved with `old_world` ranks, for `new_world` ranks: the same number of samples of the
    epoch counted as done (rounded up to a whole step), so a resume with another rank count continues the
    epoch near where it stopped; the order of the rest of the epoch then differs from the uninterrupted run."""
    if loader_state is None or old_world == new_world:
        return loader_state
    st = dict(loader_state)
    done = st["batch"] * st["batch_size"] * old_world
    st["batch"] = -(-done // (st["batch_size"] * new_world))
    n = st["n"]
    per_rank = n // new_world if st.get("drop_last") else -(-n // new_world)
    nb = per_rank // st["batch_size"] if st.get("drop_last") else -(-per_rank // st["batch_size"])
    st["batch"] = min(st["batch"], nb)
    return st


# ---------------------------------------------------------------- parameters and gradients

def broadcast_model(model, optimizer):
    """Rank 0's parameters and buffers on every rank: one broadcast per optimizer group's flat buffer, then
    the parameters no group holds (frozen) and the buffers (BatchNorm statistics)."""
    ctx = context()
    held = set()
    for flat in optimizer._flats:
        if flat is not None:
            ctx.broadcast(flat.data, "the parameter broadcast")
            held.update(id(p) for p in flat.params if flat.owns(p))
    for _, p in model.named_parameters():
        if id(p) not in held:
            ctx.broadcast(p.data, "the parameter broadcast")
    for _, b in model.named_buffers():
        ctx.broadcast(b, "the buffer broadcast")


class _Bucket:
    """A contiguous range [lo, hi) of one flat gradient buffer and the parameters in it."""
    __slots__ = ("flat", "lo", "hi", "params", "left", "req", "auto", "started")

    def __init__(self, flat, lo, hi, params):
        self.flat, self.lo, self.hi, self.params = flat, lo, hi, params
        self.left, self.req, self.auto, self.started = 0, None, False, False

    def view(self):
        """The range in the buffer's current array (taken at each start: model.to() may move the buffer)."""
        return self.flat.grad[self.lo:self.hi]


class GradReducer:
    """Averages the gradients of an optimizer's flat buffers over the ranks, bucket by bucket.

    Buckets are contiguous ranges of a group's flat gradient buffer, filled from its end (backward reaches
    the last layers first) to about `bucket_mb` MB each. The first step runs the whole backward, then reduces
    every bucket; it also counts how many times each parameter's layer reported its gradients done (a layer
    used twice reports twice). From the second step on, a bucket whose parameters have all reported that often
    is started at once, while backward goes on. The buckets start in the same order on every rank (backward
    is deterministic), and a sum over fixed ranks and sizes is deterministic in MPICH, so a run repeats bit
    for bit. Built-in layers report from a Sequential's, a Graph's and a ck.Module's recorded backward; a
    parameter used only through cnnkit.functional gets its gradient at the end of the recorded backward, so its
    bucket starts after backward."""

    def __init__(self, optimizer, bucket_mb=None):
        self.ctx = context()
        bucket_mb = self.ctx.bucket_mb if bucket_mb is None else bucket_mb
        cap = max(1, int(bucket_mb * 2**20))
        self.buckets = []
        for flat in optimizer._flats:
            if flat is None:
                continue
            hi, params, nbytes = flat.size, [], 0
            for p, off in sorted(zip(flat.params, flat.offsets), key=lambda t: -t[1]):
                params.append(p)
                nbytes += p.size * flat.grad.itemsize
                if nbytes >= cap:
                    self.buckets.append(_Bucket(flat, off, hi, params))
                    hi, params, nbytes = off, [], 0
            if params:
                self.buckets.append(_Bucket(flat, 0, hi, params))
        self._of = {id(p): b for b in self.buckets for p in b.params}
        self._expected = None           # id(param) -> reports per backward, learnt on the first step
        self._counts = {}
        self.started_in_backward = 0    # buckets the last backward started itself (overlapped)

    def __len__(self):
        return len(self.buckets)

    @contextlib.contextmanager
    def overlap(self):
        """Around model.backward: start buckets as their layers report."""
        self._counts = {}
        self.started_in_backward = 0
        for b in self.buckets:
            b.req = None
            b.auto = self._expected is not None and all(self._expected.get(id(p), 0) > 0 for p in b.params)
            b.left = sum(self._expected[id(p)] for p in b.params) if b.auto else 0
            b.started = False
        grad_ready_listeners.append(self._layer_done)
        try:
            yield
        finally:
            grad_ready_listeners.remove(self._layer_done)

    def _layer_done(self, layer):
        started = False
        for p in layer._params.values():
            b = self._of.get(id(p))
            if b is None:
                continue
            self._counts[id(p)] = self._counts.get(id(p), 0) + 1
            if b.started:
                raise DistributedError(f"cnnkit.distributed: the gradient of {p!r} changed after its bucket's "
                                       f"all-reduce had started (the backward path changed between steps)")
            if b.auto:
                b.left -= 1
                if b.left == 0:
                    self._start(b)
                    self.started_in_backward += 1
                    started = True
        if not started:
            self.ctx.progress([b.req for b in self.buckets if b.req is not None])

    def _start(self, b):
        b.started = True
        b.req = self.ctx.iallreduce(b.view())

    def finish(self):
        """Start the buckets backward did not, wait for all, and divide by the world size."""
        if self._expected is None:
            self._expected = dict(self._counts)
        for b in self.buckets:
            if not b.started:
                self._start(b)
        self.ctx.wait([b.req for b in self.buckets], "the gradient all-reduce")
        scale = 1.0 / self.ctx.size
        for b in self.buckets:
            g = b.view()
            g *= g.dtype.type(scale)
            b.req = None


# ---------------------------------------------------------------- the trainer's view

class DataParallel:
    """What a Trainer with distributed=True does on each rank: broadcast at the start, shard the loaders,
    reduce the step's loss and counts, average the gradients, reduce evaluation sums."""

    def __init__(self, model, optimizer, bucket_mb=None):
        self.ctx = context()
        self.model, self.optimizer = model, optimizer
        self.reducer = GradReducer(optimizer, bucket_mb)
        self.rank, self.size = self.ctx.rank, self.ctx.size
        self.is_main = self.rank == 0
        self._started = False

    def start(self):
        """Once, before the first step: rank 0's weights everywhere."""
        if not self._started:
            broadcast_model(self.model, self.optimizer)
            self._started = True

    def step_sums(self, loss, correct, count):
        """(mean loss over the ranks' samples, correct, count) summed over the ranks. A non-finite loss on any
        rank makes the result non-finite on every rank, so all skip the step together."""
        xp = array_module(loss) if is_device_array(loss) else np
        buf = xp.stack([xp.asarray(loss * count, dtype=np.float64), xp.asarray(correct, dtype=np.float64),
                        xp.asarray(count, dtype=np.float64)])
        self.ctx.allreduce(buf, "the step's loss reduction")
        if xp is np:
            return float(buf[0] / buf[2]), int(buf[1]), int(buf[2])
        return buf[0] / buf[2], buf[1], int(count) * self.size

    def eval_sums(self, total, correct, n):
        buf = np.array([float(total), float(correct), float(n)], dtype=np.float64)
        self.ctx.allreduce(buf, "the evaluation reduction")
        return float(buf[0]), int(buf[1]), int(buf[2])

    def guard(self):
        """A context in which an exception on this rank aborts the job after printing it."""
        return _abort_on_error(self.ctx)


@contextlib.contextmanager
def _abort_on_error(ctx):
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        ctx.abort(e)
        raise


def convert_sync_batchnorm(model):
    """Turn every BatchNorm1d / BatchNorm2d of `model` into a SyncBatchNorm, in place (parameters, buffers and
    names kept); returns the model, as torch.nn.SyncBatchNorm.convert_sync_batchnorm."""
    for _, layer in model.named_layers():
        if isinstance(layer, _norm._BatchNorm) and not isinstance(layer, _norm.SyncBatchNorm):
            layer.__class__ = _norm.SyncBatchNorm
    return model
