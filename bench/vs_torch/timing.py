"""Timing the two libraries case by case (CPU wall clock, GPU CUDA events), comparing their results, and
where each library's arrays live (host or GPU)."""
import math
import statistics
import time

import numpy as np
import torch


def _ms(fn):
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def time_pair(ck_fn, th_fn, args):
    """Warm up both, then time cnnkit then torch back to back per repeat; medians (and minima) in ms."""
    warm = 1 if args.quick else 2
    w_ck = [_ms(ck_fn) for _ in range(warm)]
    w_th = [_ms(th_fn) for _ in range(warm)]
    if args.repeat is not None:
        reps = args.repeat
    elif args.quick:
        reps = 3
    else:  # about 0.5 s per library, 7 to 40 repeats
        per_call = max(min(w_ck), min(w_th), 1e-3)
        reps = int(min(40, max(7, 500.0 / per_call)))
    t_ck, t_th = [], []
    for _ in range(reps):
        t_ck.append(_ms(ck_fn))
        t_th.append(_ms(th_fn))
    return statistics.median(t_ck), statistics.median(t_th), reps, min(t_ck), min(t_th)


def time_pair_cuda(ck_fn, th_fn, args):
    """GPU timing: warm up both (cuDNN autotunes on its first calls), then per repeat time `inner` back-to-back
    calls of cnnkit, then of torch, between CUDA events recorded on each library's current stream, after a
    device-wide sync; ms per call = event time / inner, with inner chosen so one sample spans >= ~2 ms (so
    launch and Python overheads count as they would in a loop, but event resolution does not). Medians
    (and minima) of the per-call times."""
    import cupy

    def sample(fn, inner, lib):
        torch.cuda.synchronize()  # the whole device: CuPy's stream too
        if lib == "ck":
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
        else:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        ms = cupy.cuda.get_elapsed_time(start, end) if lib == "ck" else start.elapsed_time(end)
        return ms / inner

    warm = 1 if args.quick else 3
    for _ in range(warm):
        ck_fn()
        th_fn()
    est_ck, est_th = sample(ck_fn, 1, "ck"), sample(th_fn, 1, "th")
    inner = int(min(200, max(1, math.ceil(2.0 / max(min(est_ck, est_th), 1e-3)))))
    if args.repeat is not None:
        reps = args.repeat
    elif args.quick:
        reps = 3
    else:  # about 0.3 s for the slower library, 10 to 50 repeats
        reps = int(min(50, max(10, 300.0 / (max(est_ck, est_th, 1e-3) * inner))))
    t_ck, t_th = [], []
    for _ in range(reps):
        t_ck.append(sample(ck_fn, inner, "ck"))
        t_th.append(sample(th_fn, inner, "th"))
    return statistics.median(t_ck), statistics.median(t_th), reps, min(t_ck), min(t_th), inner


# ---------------------------------------------------------------- result checks (outside the timed region)

def _close(a, b, tol=2e-3):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    return float(np.abs(a - b).max(initial=0.0)) <= tol * scale


# ---------------------------------------------------------------- where the arrays live

class HostArrays:
    """CPU: cnnkit gets the numpy array itself, torch a CPU tensor over a copy (same values, separate memory,
    so neither call warms the other's inputs); results are read back as numpy."""
    name = "cpu"

    def ck(self, a):
        return a

    def th(self, a):
        return torch.from_numpy(a.copy())

    def ck_host(self, a):
        return a

    def th_host(self, t):
        return t.numpy()

    def move_models(self, model, net):
        pass


class CudaArrays(HostArrays):
    """GPU 0: cnnkit gets CuPy arrays, torch CUDA tensors, both copied from the same numpy values."""
    name = "cuda"

    def ck(self, a):
        import cupy
        return cupy.asarray(a)

    def th(self, a):
        return torch.as_tensor(a, device="cuda")

    def ck_host(self, a):
        import cupy
        return cupy.asnumpy(a)

    def th_host(self, t):
        return t.detach().cpu().numpy()

    def move_models(self, model, net):
        try:
            model.to("cuda")
        except Exception as e:  # a device op that fails: say so instead of failing the run
            raise ModelToCudaMissing(f"cnnkit model.to('cuda') failed: {type(e).__name__}: {e}") from e
        net.cuda()


class Skipped(RuntimeError):
    """A section cnnkit cannot run on this device yet: reported as skipped, the run goes on."""


class ModelToCudaMissing(Skipped):
    pass


HOST = HostArrays()
