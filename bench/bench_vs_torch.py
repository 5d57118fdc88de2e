"""cnnkit vs PyTorch on exactly the cases of bench/cases.json, in one process, on the CPU or a GPU.

Times conv2d (fwd, bwd_data, bwd_weight), maxpool2d 2x2/2 (fwd with indices, bwd), dropout p=0.5 (fwd, bwd)
and relu fwd at each thread count, interleaving the two libraries case by case, and prints a table of
ratio = torch time / cnnkit time (> 1: cnnkit is faster) with GFLOP/s or GB/s by the cases.json counting rules.
--device cuda: the same cases on the GPU (CuPy arrays vs torch CUDA tensors, cuDNN), conv2d in float32 with
TF32 off on both sides and then in TF32 on both sides, memory-bound ops as fractions of HBM bandwidth, the
fused Adam step on ResNet-18's parameters, and the reference-net training step; CUDA-event timing.
"""
import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

DEFAULT_CASES = Path(__file__).resolve().parent / "cases.json"
OPS = ("conv2d", "maxpool2d", "dropout", "relu", "e2e")
CUDA_OPS = OPS + ("adam",)  # the optimizer section runs here only on the GPU (CPU: bench/bench_optim.py)
RELU_SHAPE = (128, 64, 32, 32)  # not in cases.json: the first maxpool2d input, where the reference net has a relu


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES, help=f"case list (default {DEFAULT_CASES})")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed repeats per library and case (default: adaptive, 7 to 40, ~0.5 s per library)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 warm-up call, 3 repeats")
    ap.add_argument("--only", default=None, help="comma-separated subset of " + "|".join(OPS))
    ap.add_argument("--json", type=Path, default=None, help="write all results and the machine info here")
    ap.add_argument("--import-order", choices=("cnnkit-first", "torch-first"), default="cnnkit-first",
                    help="PyTorch and cnnkit share ONE libgomp in a process (same soname); the first import "
                         "decides its env (cnnkit-first: cnnkit's OMP_WAIT_POLICY=PASSIVE default applies "
                         "to both; torch-first: libgomp's own default applies to both)")
    ap.add_argument("--torch-thp", action="store_true",
                    help="set THP_MEM_ALLOC_ENABLE=1 before importing torch, so its CPU allocator asks for "
                         "transparent huge pages as numpy's does for cnnkit's outputs (separates page-fault "
                         "cost from kernel speed on the memory-bound ops)")
    ap.add_argument("--no-check", action="store_true", help="skip the cnnkit-vs-torch result check")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cpu (default): numpy vs torch CPU at each --threads; cuda: CuPy vs torch on GPU 0 "
                         "(cuDNN), float32 then TF32 for conv2d, plus the fused Adam section")
    ap.add_argument("--hbm-gbs", type=float, default=4300.0,
                    help="--device cuda: HBM bandwidth in GB/s that memory-bound rates are divided by "
                         "(default 4300: an H200's copy bandwidth, about 4.3 TB/s)")
    args = ap.parse_args(argv)
    if not args.cases.is_file():
        ap.error(f"--cases: no such file {args.cases}")
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not args.threads or min(args.threads) < 1:
        ap.error("--threads needs positive integers")
    valid = CUDA_OPS if args.device == "cuda" else OPS
    args.only = set(valid) if args.only is None else {o.strip() for o in args.only.split(",") if o.strip()}
    bad = args.only - set(valid)
    if bad:
        ap.error(f"--only: unknown op(s) {sorted(bad)} for --device {args.device}; choose from {'|'.join(valid)}")
    if args.hbm_gbs <= 0:
        ap.error("--hbm-gbs must be positive")
    if args.repeat is not None and args.repeat < 1:
        ap.error("--repeat must be >= 1")
    return args


ARGS = parse_args()
_ENV_KEYS = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "THP_MEM_ALLOC_ENABLE")
ENV_AT_START = {k: os.environ.get(k) for k in _ENV_KEYS}  # as the user set it, before cnnkit's setdefaults
if ARGS.torch_thp:
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
if ARGS.import_order == "torch-first":
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
    import cnnkit  # noqa: E402
else:
    import cnnkit  # noqa: E402
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
import numpy as np  # noqa: E402
from cnnkit import ops  # noqa: E402


# ---------------------------------------------------------------- timing

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


# ---------------------------------------------------------------- cases

def conv_cases(cfg, rng, dev=HOST, tol=2e-3):
    """Yield (label, pass, flops, ck_fn, th_fn, check_fn) for the conv2d shapes."""
    N, C, H, W, K, R = cfg["N"], cfg["C"], cfg["H"], cfg["W"], cfg["K"], cfg["kernel"]
    s, p = cfg["stride"], cfg["padding"]
    stride, padding, dilation, groups = (s, s), (p, p), (1, 1), 1
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = rng.standard_normal((K, C // groups, R, R), dtype=np.float32) * np.float32(1.0 / math.sqrt(C * R * R))
    _, _, P, Q = ops.conv2d_out_shape(x.shape, w.shape, stride, padding, dilation, groups)
    dy = rng.standard_normal((N, K, P, Q), dtype=np.float32)
    x_shape = x.shape
    tx, tw, tdy = (dev.th(a) for a in (x, w, dy))
    x, w, dy = (dev.ck(a) for a in (x, w, dy))
    flops = 2.0 * N * K * P * Q * (C // groups) * R * R

    def ck_fwd():
        return ops.conv2d_fwd(x, w, None, stride, padding, dilation, groups)

    def th_fwd():
        return F.conv2d(tx, tw, None, stride, padding, dilation, groups)

    def ck_bd():
        return ops.conv2d_bwd_data(dy, w, x_shape, stride, padding, dilation, groups)

    def th_bd():
        return torch.ops.aten.convolution_backward(tdy, tx, tw, None, list(stride), list(padding), list(dilation),
                                                   False, [0, 0], groups, [True, False, False])[0]

    def ck_bw():
        return ops.conv2d_bwd_weight(dy, x, w.shape, stride, padding, dilation, groups)

    def th_bw():
        return torch.ops.aten.convolution_backward(tdy, tx, tw, None, list(stride), list(padding), list(dilation),
                                                   False, [0, 0], groups, [False, True, False])[1]

    for name, ck_fn, th_fn in (("fwd", ck_fwd, th_fwd), ("bwd_data", ck_bd, th_bd), ("bwd_weight", ck_bw, th_bw)):
        yield (cfg["label"], name, ("GFLOP/s", flops), ck_fn, th_fn,
               lambda c=ck_fn, t=th_fn: _close(dev.ck_host(c()), dev.th_host(t()), tol))


def maxpool_cases(cfg, rng, dev=HOST):
    shape = tuple(cfg["shape"])
    k, s = cfg["kernel"], cfg["stride"]
    label = "x".join(map(str, shape)) + f" k{k}s{s}"
    x = rng.standard_normal(shape, dtype=np.float32)
    y, idx = ops.maxpool2d_fwd(x, k, s)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    nbytes = x.nbytes + y.nbytes + idx.nbytes  # x + y (fp32) + indices (int64); bwd: dy + indices + dx, the same
    tx, tdy, tidx = dev.th(x), dev.th(dy), dev.th(idx)
    x_shape = x.shape
    x, dy, idx = dev.ck(x), dev.ck(dy), dev.ck(idx)

    def ck_fwd():
        return ops.maxpool2d_fwd(x, k, s)

    def th_fwd():
        return F.max_pool2d(tx, k, s, return_indices=True)

    def ck_bwd():
        return ops.maxpool2d_bwd(dy, idx, x_shape)

    def th_bwd():
        return torch.ops.aten.max_pool2d_with_indices_backward(tdy, tx, [k, k], [s, s], [0, 0], [1, 1], False, tidx)

    def check_fwd():
        (cy, ci), (ty, ti) = ck_fwd(), th_fwd()
        return (np.array_equal(dev.ck_host(cy), dev.th_host(ty))
                and np.array_equal(dev.ck_host(ci), dev.th_host(ti)))

    yield label, "fwd", ("GB/s", nbytes), ck_fwd, th_fwd, check_fwd
    yield label, "bwd", ("GB/s", nbytes), ck_bwd, th_bwd, lambda: _close(dev.ck_host(ck_bwd()), dev.th_host(th_bwd()))


def dropout_cases(cfg, rng, dev=HOST):
    shape = tuple(cfg["shape"])
    p = float(cfg["p"])
    label = "x".join(map(str, shape)) + f" p={p:g}"
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    _, mask = ops.dropout_fwd(x, p, seed=1234)
    tx, tdy = dev.th(x), dev.th(dy)
    tmask = dev.th(mask.astype(bool))  # same mask for both, so the bwd results can be compared
    scale = 1.0 / (1.0 - p)
    nbytes = 9 * x.size  # fp32 in, fp32 out, 1-byte mask, in each direction
    counter = [0]
    x_host = x
    x, dy, mask = dev.ck(x), dev.ck(dy), dev.ck(mask)

    def ck_fwd():
        counter[0] += 1  # a fresh mask per call, as in training
        return ops.dropout_fwd(x, p, seed=1234, offset=counter[0] * x.size)

    def th_fwd():
        return torch.native_dropout(tx, p, True)

    def ck_bwd():
        return ops.dropout_bwd(dy, mask, p)

    def th_bwd():
        return torch.ops.aten.native_dropout_backward(tdy, tmask, scale)

    def check_fwd():
        y, m = (dev.ck_host(a) for a in ck_fwd())
        keep = m.mean()
        return abs(keep - (1 - p)) < 0.01 and _close(y, x_host * m.astype(np.float32) * np.float32(scale), 1e-6)

    yield label, "fwd", ("GB/s", nbytes), ck_fwd, th_fwd, check_fwd
    yield (label, "bwd", ("GB/s", nbytes), ck_bwd, th_bwd,
           lambda: _close(dev.ck_host(ck_bwd()), dev.th_host(th_bwd()), 1e-6))


def relu_cases(rng, dev=HOST):
    x = rng.standard_normal(RELU_SHAPE, dtype=np.float32)
    tx = dev.th(x)
    nbytes = 2 * x.nbytes
    x = dev.ck(x)
    label = "x".join(map(str, RELU_SHAPE)) + " (extra)"
    yield (label, "fwd", ("GB/s", nbytes), lambda: ops.relu_fwd(x), lambda: torch.relu(tx),
           lambda: np.array_equal(dev.ck_host(ops.relu_fwd(x)), dev.th_host(torch.relu(tx))))


# ---------------------------------------------------------------- machine info

def e2e_cases(cases, rng, dev=HOST):
    """One training step of the cases.json reference net (zero grads, forward, softmax cross-entropy,
    backward, Adam step) in each library, same weights, random 3x32x32 images, at each batch size.
    On the GPU: cnnkit's model.to("cuda") and torch eager; ModelToCudaMissing if cnnkit cannot move it."""
    import cnnkit as ck
    nn = torch.nn
    spec = cases["e2e"]
    C, H, W = spec["input"]
    K = spec["classes"]
    for batch in spec["batches"]:
        ck.manual_seed(0)
        model = ck.Sequential(
            ck.Conv2d(3, 32, 3, padding=1), ck.ReLU(), ck.MaxPool2d(2), ck.Conv2d(32, 64, 3, padding=1), ck.ReLU(),
            ck.MaxPool2d(2), ck.Conv2d(64, 128, 3, padding=1), ck.ReLU(), ck.MaxPool2d(2), ck.Flatten(),
            ck.Linear(2048, 256), ck.ReLU(), ck.Dropout(0.5), ck.Linear(256, K))
        model.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                            nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(2048, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, K))
        with torch.no_grad():
            for p_t, (_, p_c) in zip(net.parameters(), model.named_parameters()):
                assert tuple(p_t.shape) == p_c.shape  # torch's layouts: (K, C, R, S) and (out, in)
                p_t.copy_(torch.from_numpy(p_c.data))
        dev.move_models(model, net)  # before the optimizers: they build flat buffers over the parameters
        opt_c = ck.optim.Adam(model.parameters(), lr=1e-3)
        opt_t = torch.optim.Adam(net.parameters(), lr=1e-3)
        x = rng.standard_normal((batch, C, H, W), dtype=np.float32)
        y = rng.integers(0, K, batch).astype(np.int64)
        tx, ty = dev.th(x), dev.th(y)
        x, y = dev.ck(x), dev.ck(y)

        def ck_step():
            opt_c.zero_grad()
            loss, d = ck.losses.softmax_cross_entropy(model(x), y)
            model.backward(d)
            opt_c.step()
            return loss

        def th_step():
            opt_t.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(tx), ty)
            loss.backward()
            opt_t.step()
            return float(loss) if dev.name == "cpu" else loss  # on the GPU: no host sync inside the timing

        def check():  # before any step, both compute the same initial loss (dropout off: eval mode)
            model.eval()
            net.eval()
            a = float(ck.losses.softmax_cross_entropy(model(x), y)[0])
            with torch.no_grad():
                b = float(torch.nn.functional.cross_entropy(net(tx), ty))
            model.train()
            net.train()
            return abs(a - b) <= 1e-4 * max(1.0, abs(b))

        # rate = work / ms * 1e-6, so work = batch * 1e9 gives images per second
        yield (f"reference net, batch {batch}", "step", ("img/s", batch * 1e9), ck_step, th_step, check)


def adam_cases_cuda(cases, rng):
    """The fused Adam step over ResNet-18's parameter shapes (cases.json, 62 tensors, 11.7M float32 values):
    cnnkit's optimizer on CuPy parameters vs torch.optim.Adam(fused=True) on CUDA, and cnnkit's adam_step
    kernel alone on one flat buffer. Work = 28 bytes per parameter (read p, g, m, v; write p, m, v)."""
    import cupy
    import cnnkit as ck
    from cnnkit.ops import _cuda as _cuda_ops
    shapes = [tuple(s) for s in cases["optimizer_param_shapes_resnet18"]]
    n = sum(math.prod(s) for s in shapes)
    nbytes = cases["optimizer_bytes_per_element"]["Adam"] * n
    label = f"resnet18 {len(shapes)} tensors, {n / 1e6:.1f}M"
    values = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.05) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-3) for s in shapes]
    tparams = [torch.nn.Parameter(torch.as_tensor(v, device="cuda")) for v in values]
    for p, g in zip(tparams, grads):
        p.grad = torch.as_tensor(g, device="cuda")
    opt_t = torch.optim.Adam(tparams, lr=1e-3, fused=True)

    def th_step():
        opt_t.step()

    # the kernel alone: one flat buffer, the scalars of step 1 (as the optimizer computes them on the host)
    flat = [cupy.asarray(np.concatenate([a.ravel() for a in values])),
            cupy.asarray(np.concatenate([a.ravel() for a in grads]))]
    m, v = cupy.zeros(n, cupy.float32), cupy.zeros(n, cupy.float32)
    b1, b2, lr = 0.9, 0.999, 1e-3

    def ck_kernel():
        _cuda_ops.adam_step(flat[0], flat[1], m, v, None, b1, b2, 1e-8, -lr / (1 - b1), math.sqrt(1 - b2), 1.0,
                            1.0, math.inf, 0.0, 0.0)

    def check_kernel():  # one step from zero moments: p - lr * g / (|g| + eps) elementwise, as torch computes
        p0 = flat[0].copy()
        m.fill(0)
        v.fill(0)
        ck_kernel()
        g = flat[1]
        want = p0 - lr * g / (cupy.abs(g) + 1e-8)
        return _close(cupy.asnumpy(flat[0]), cupy.asnumpy(want), 1e-5)

    yield label, "adam_step kernel", ("GB/s", nbytes), ck_kernel, th_step, check_kernel

    # cnnkit's optimizer on CuPy parameters (its step runs the CUDA kernels; a failure is reported, not raised)
    params = [ck.Parameter(cupy.asarray(a)) for a in values]
    for p, g in zip(params, grads):
        p.grad[...] = cupy.asarray(g)
    try:
        opt_c = ck.optim.Adam(params, lr=1e-3)
        opt_c.step()
    except Exception as e:
        raise Skipped(f"the optimizer row: ck.optim.Adam on CuPy parameters failed: {type(e).__name__}: {e}") from e

    def ck_step():
        opt_c.step()

    yield label, "optimizer", ("GB/s", nbytes), ck_step, th_step, None


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loaded_libs(*needles):
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if len(ln.split()) >= 6}
    except OSError:
        return []
    return sorted(p for p in paths if any(n in os.path.basename(p) for n in needles))


def _read(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _numpy_hugepage():
    try:
        from numpy._core.multiarray import _get_madvise_hugepage
    except ImportError:
        try:
            from numpy.core.multiarray import _get_madvise_hugepage
        except ImportError:
            return None
    return bool(_get_madvise_hugepage())


def machine_info(args):
    return {
        "cnnkit": cnnkit.build_info(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "import_order": args.import_order,
        "env_at_start": ENV_AT_START,
        "env_after_imports": {k: os.environ.get(k) for k in _ENV_KEYS},
        "openmp_runtime": loaded_libs("gomp", "iomp", "libomp"),
        # libgomp reads its env once, when the first of the two libraries loads it
        "omp_wait_policy_effective": (ENV_AT_START["OMP_WAIT_POLICY"] if args.import_order == "torch-first"
                                      else os.environ.get("OMP_WAIT_POLICY")) or "unset (libgomp default)",
        "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "numpy_madvise_hugepage": _numpy_hugepage(),
        "torch_thp_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
        "cases_file": str(args.cases),
    }


# ---------------------------------------------------------------- main

def _warn_load(when, loadavg, ncpu):
    if loadavg and ncpu and loadavg[0] > 0.5 * ncpu:
        print(f"NOTE: 1-min load average {loadavg[0]:.2f} {when} on {ncpu} cpus: other processes share the "
              f"machine, so times are inflated and multi-thread figures depressed; compare ratios, or rerun idle")


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def cuda_info(args):
    import cupy
    props = torch.cuda.get_device_properties(0)
    return {
        "cnnkit": cnnkit.build_info(),
        "cnnkit_cuda_status": cnnkit.cuda.status(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
        "gpu": props.name,
        "gpu_memory_gib": props.total_memory / 2**30,
        "sm_count": props.multi_processor_count,
        "hbm_gbs_assumed": args.hbm_gbs,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cases_file": str(args.cases),
    }


def set_tf32(on):
    """TF32 for convolutions and matmuls on both sides (cnnkit has only the conv switch; its matmul is
    cupy.matmul, which stays float32 unless CUPY_TF32=1)."""
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on
    cnnkit.cuda.set_tf32(on)


def main_cuda(args):
    """--device cuda: everything on GPU 0, one process. See the module docstring and bench/README.md."""
    if not cnnkit.cuda.is_available():
        print(f"--device cuda: cnnkit cannot use CUDA here: {cnnkit.cuda.status()}")
        return 2
    if not torch.cuda.is_available():
        print("--device cuda: torch.cuda.is_available() is False (a CPU-only torch, or no driver)")
        return 2
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm per shape (during warm-up)
    cases = json.loads(args.cases.read_text())
    info = cuda_info(args)
    dev = CudaArrays()
    hbm = args.hbm_gbs
    print(f"cnnkit {info['cnnkit'].get('version')} (CUDA {info['cnnkit_cuda_status']}) vs torch {info['torch']} "
          f"(CUDA {info['torch_cuda']}, cuDNN {info['cudnn']}, benchmark mode) on {info['gpu']} "
          f"({info['sm_count']} SMs, {info['gpu_memory_gib']:.0f} GiB); CuPy {info['cupy']}")
    print("ratio = torch ms / cnnkit ms (> 1: cnnkit faster); CUDA-event medians after warm-up; "
          f"%HBM = rate / {hbm:g} GB/s")
    results, failed_checks, skipped = [], [], []
    hdr = (f"{'op':<9} {'case':<24} {'pass':<16} {'prec':<4} {'cnnkit ms':>10} {'torch ms':>10} {'cnnkit rate':>12} "
           f"{'torch rate':>11} {'unit':<7} {'ratio':>6} {'ck %HBM':>8} {'th %HBM':>8} {'n':>4}")

    errors = []

    def run(op, gen, prec):
        """Time every case of `gen`; an exception ends this group only (printed and recorded), so one GPU run
        still reports everything else and writes its JSON."""
        try:
            run_cases(op, gen, prec)
        except Skipped as e:
            print(f"{op} skipped: {e}", flush=True)
            skipped.append(f"{op}: {e}")
        except Exception as e:
            traceback.print_exc()
            print(f"{op} ({prec}) stopped by {type(e).__name__}: {e}", flush=True)
            errors.append(f"{op} {prec}: {type(e).__name__}: {e}")

    def run_cases(op, gen, prec):
        for label, pas, (unit, work), ck_fn, th_fn, check in gen:
            ok = None
            if check is not None and not args.no_check:
                ok = bool(check())
                if not ok:
                    failed_checks.append(f"{op} {label} {pas} {prec}")
            ck_ms, th_ms, reps, ck_min, th_min, inner = time_pair_cuda(ck_fn, th_fn, args)
            scale = 1e-9 / 1e-3
            ck_rate, th_rate = work / ck_ms * scale, work / th_ms * scale
            r = dict(op=op, case=label, **{"pass": pas}, precision=prec, device="cuda", cnnkit_ms=ck_ms,
                     torch_ms=th_ms, ratio=th_ms / ck_ms, rate=ck_rate, torch_rate=th_rate, unit=unit,
                     repeats=reps, calls_per_sample=inner, check_ok=ok, cnnkit_min_ms=ck_min, torch_min_ms=th_min)
            if unit == "GB/s":
                r["hbm_fraction"], r["torch_hbm_fraction"] = ck_rate / hbm, th_rate / hbm
                frac = f"{100 * ck_rate / hbm:>7.1f}% {100 * th_rate / hbm:>7.1f}%"
            else:
                frac = f"{'':>8} {'':>8}"
            results.append(r)
            flag = "" if ok in (None, True) else "  MISMATCH"
            print(f"{op:<9} {label:<24} {pas:<16} {prec:<4} {ck_ms:>10.4f} {th_ms:>10.4f} {ck_rate:>12.1f} "
                  f"{th_rate:>11.1f} {unit:<7} {r['ratio']:>6.2f} {frac} {reps:>4}{flag}", flush=True)

    rng = np.random.default_rng(0)
    with torch.no_grad():
        if "conv2d" in args.only:
            for prec in ("fp32", "tf32"):
                set_tf32(prec == "tf32")
                print(f"\n== conv2d, {'float32: TF32 off on both sides' if prec == 'fp32' else 'TF32 on both sides'} "
                      f"(cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
                      f"cnnkit.cuda.get_tf32()={cnnkit.cuda.get_tf32()}) ==")
                print(hdr)
                for c in cases["conv2d"]:
                    run("conv2d", conv_cases(c, rng, dev, tol=2e-3 if prec == "fp32" else 1e-2), prec)
        set_tf32(False)
        mem = []
        if "maxpool2d" in args.only:
            mem += [("maxpool2d", maxpool_cases(c, rng, dev)) for c in cases["maxpool2d"]]
        if "dropout" in args.only:
            mem += [("dropout", dropout_cases(c, rng, dev)) for c in cases["dropout"]]
        if "relu" in args.only:
            mem.append(("relu", relu_cases(rng, dev)))
        if "adam" in args.only:
            mem.append(("adam", adam_cases_cuda(cases, rng)))
        if mem:
            print("\n== memory-bound ops (float32) ==")
            print(hdr)
            for op, gen in mem:
                run(op, gen, "fp32")
    if "e2e" in args.only:
        print("\n== reference-net training step (float32, TF32 off on both sides; torch eager) ==")
        print(hdr)
        run("e2e", e2e_cases(cases, rng, dev), "fp32")

    summary = {}
    conv = [r for r in results if r["op"] == "conv2d"]
    if conv:
        print("\nconv2d geometric mean of ratios (torch/cnnkit = fraction of cuDNN speed) over the 8 shapes "
              "(target >= 0.5 in fp32, moonshot 0.8):")
        print(f"{'pass':<11}{'fp32':>9}{'tf32':>9}")
        for pas in ("fwd", "bwd_data", "bwd_weight"):
            row = []
            for prec in ("fp32", "tf32"):
                g = geomean([r["ratio"] for r in conv if r["pass"] == pas and r["precision"] == prec])
                summary[f"conv2d_{pas}_geomean_{prec}"] = g
                row.append(g)
            print(f"{pas:<11}" + "".join(f"{g:>9.2f}" for g in row))
    for r in results:
        if r["op"] in ("maxpool2d", "dropout", "relu", "adam"):
            summary[f"{r['op']} {r['case']} {r['pass']} hbm_fraction"] = r["hbm_fraction"]
    if failed_checks:
        print(f"\nWARNING: cnnkit result differs from torch in: {', '.join(failed_checks)}")
    for what in skipped + errors:
        print(f"NOT MEASURED: {what}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "argv": sys.argv[1:], "results": results,
                                         "summary": summary, "failed_checks": failed_checks,
                                         "skipped": skipped, "errors": errors}, indent=1))
        print(f"\nwrote {args.json}")
    return 1 if failed_checks or errors else 0


def main(args):
    if args.device == "cuda":
        return main_cuda(args)
    cases = json.loads(args.cases.read_text())
    info = machine_info(args)
    bi = info["cnnkit"]
    print(f"cnnkit {bi.get('version')} ({bi.get('simd')}, {bi.get('blas')}) vs torch {info['torch']} "
          f"on {info['cpu_model']} ({info['cpu_count']} cpus, load {info['loadavg']})")
    print(f"OpenMP runtime (shared by both): {', '.join(info['openmp_runtime']) or '?'}; "
          f"OMP_WAIT_POLICY seen by it: {info['omp_wait_policy_effective']} ({args.import_order}); "
          f"cases: {args.cases}")
    print(f"huge pages for fresh outputs: numpy (cnnkit's outputs) {info['numpy_madvise_hugepage']}, "
          f"torch {info['torch_thp_alloc']} (--torch-thp); THP mode: {info['transparent_hugepage']}")
    print("ratio = torch ms / cnnkit ms (> 1: cnnkit faster); medians after warm-up; rates by cases.json rules")
    print("optimizer section of cases.json: see bench/bench_optim.py")
    _warn_load("at start", info["loadavg"], info["cpu_count"])

    results, failed_checks = [], []
    hdr = f"{'op':<9} {'case':<24} {'pass':<10} {'thr':>3} {'cnnkit ms':>10} {'torch ms':>10} " \
          f"{'cnnkit rate':>12} {'torch rate':>11} {'unit':<7} {'ratio':>6}  {'n':>3}"
    for nt in args.threads:
        torch.set_num_threads(nt)
        cnnkit.set_num_threads(nt)
        print(f"\n== {nt} thread{'s' if nt > 1 else ''} (cnnkit {cnnkit.get_num_threads()}, "
              f"torch {torch.get_num_threads()}) ==")
        print(hdr)
        rng = np.random.default_rng(0)
        groups = []
        if "conv2d" in args.only:
            groups += [("conv2d", conv_cases(c, rng)) for c in cases["conv2d"]]
        if "maxpool2d" in args.only:
            groups += [("maxpool2d", maxpool_cases(c, rng)) for c in cases["maxpool2d"]]
        if "dropout" in args.only:
            groups += [("dropout", dropout_cases(c, rng)) for c in cases["dropout"]]
        if "relu" in args.only:
            groups.append(("relu", relu_cases(rng)))
        if "e2e" in args.only:
            groups.append(("e2e", e2e_cases(cases, rng)))
        for op, gen in groups:
            with (contextlib.nullcontext() if op == "e2e" else torch.no_grad()):
                for label, pas, (unit, work), ck_fn, th_fn, check in gen:
                    ok = None
                    if not args.no_check:
                        ok = bool(check())
                        if not ok:
                            failed_checks.append(f"{op} {label} {pas} @{nt}t")
                    ck_ms, th_ms, reps, ck_min, th_min = time_pair(ck_fn, th_fn, args)
                    scale = 1e-9 / 1e-3  # work per ms -> per s, then giga
                    ck_rate, th_rate = work / ck_ms * scale, work / th_ms * scale
                    r = dict(op=op, case=label, **{"pass": pas}, threads=nt, cnnkit_ms=ck_ms, torch_ms=th_ms,
                             ratio=th_ms / ck_ms, rate=ck_rate, torch_rate=th_rate, unit=unit, repeats=reps,
                             check_ok=ok, cnnkit_min_ms=ck_min, torch_min_ms=th_min)
                    results.append(r)
                    flag = "" if ok in (None, True) else "  MISMATCH"
                    print(f"{op:<9} {label:<24} {pas:<10} {nt:>3} {ck_ms:>10.3f} {th_ms:>10.3f} {ck_rate:>12.1f} "
                          f"{th_rate:>11.1f} {unit:<7} {r['ratio']:>6.2f}  {reps:>3}{flag}", flush=True)

    summary = {}
    if "conv2d" in args.only:
        print("\nconv2d geometric mean of ratios (torch/cnnkit) over the 8 shapes:")
        print(f"{'pass':<11}" + "".join(f"{str(nt) + ' thr':>9}" for nt in args.threads))
        for pas in ("fwd", "bwd_data", "bwd_weight"):
            row = []
            for nt in args.threads:
                g = geomean([r["ratio"] for r in results if r["op"] == "conv2d" and r["pass"] == pas
                             and r["threads"] == nt])
                summary[f"conv2d_{pas}_geomean_{nt}t"] = g
                row.append(g)
            print(f"{pas:<11}" + "".join(f"{g:>9.2f}" for g in row))
    if failed_checks:
        print(f"\nWARNING: cnnkit result differs from torch in: {', '.join(failed_checks)}")
    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "argv": sys.argv[1:], "results": results,
                                         "summary": summary, "failed_checks": failed_checks}, indent=1))
        print(f"\nwrote {args.json}")
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
