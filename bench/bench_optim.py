"""Optimizer step over ResNet-18's 62 parameter tensors (11,689,512 float32; bench/cases.json):
cnnkit's fused flat-buffer step against torch.optim's default (for-loop) and fused=True implementations,
at 1 and 2 threads, in one process. Before every timed step a 256 MB buffer is written so the parameters,
gradients and state come from DRAM, not cache. Reports the median time, the effective bandwidth over the
case's bytes per element (Adam/AdamW 28, the others 20) and the speed-up of cnnkit over each torch variant.

    python bench/bench_optim.py [--threads 1 2] [--repeats 15] [--json out.json]

cnnkit's timed step is the whole ``opt.step()``: the read-only finite-check pass over the flat gradients plus
the fused update. ``kernel`` is the update pass alone (what torch's fused kernels do).
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import numpy as np

import cnnkit as ck
import torch

HERE = pathlib.Path(__file__).resolve().parent
CASES_DEFAULT = HERE / "cases.json"

# case name in cases.json -> (cnnkit class, kwargs, torch class, kwargs, torch has fused=True on CPU)
OPTIMIZERS = {
    "Adam": (ck.optim.Adam, dict(lr=1e-3), torch.optim.Adam, dict(lr=1e-3), True),
    "AdamW": (ck.optim.AdamW, dict(lr=1e-3), torch.optim.AdamW, dict(lr=1e-3), True),
    "SGD-nesterov": (ck.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True), torch.optim.SGD,
                     dict(lr=0.1, momentum=0.9, nesterov=True), True),
    "RMSprop": (ck.optim.RMSProp, dict(lr=1e-2), torch.optim.RMSprop, dict(lr=1e-2), False),
    "Adagrad": (ck.optim.AdaGrad, dict(lr=1e-2), torch.optim.Adagrad, dict(lr=1e-2), True),
}


class Evictor:
    """Writes a 256 MB buffer (well past any last-level cache) before each timed call."""

    def __init__(self, mb=256):
        self.buf = np.zeros(mb * 2**20 // 8)

    def __call__(self):
        self.buf += 1.0


def median_ms(fns, evict, repeats, warmup=2):
    """Median milliseconds of each callable in `fns` (a dict). The variants take turns within every repeat, so
    a burst of load from other users of a shared machine hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            evict()
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in ts.items()}


def bench_case(name, shapes, bpe, threads, repeats, evict, rng):
    ck_cls, ck_kw, t_cls, t_kw, has_fused = OPTIMIZERS[name]
    init = [rng.standard_normal(s).astype(np.float32) * 0.05 for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) * 1e-3 for s in shapes]
    n = sum(a.size for a in init)
    ck.set_num_threads(threads)
    torch.set_num_threads(threads)
    res = {"case": name, "threads": threads, "elements": n, "bytes_per_element": bpe}

    ps = [ck.Parameter(a.copy()) for a in init]
    opt = ck_cls(ps, **ck_kw)
    for p, g in zip(ps, grads):
        p.grad[...] = g
    # the update pass alone, without the finite check (the same call opt.step makes)
    g0, st, flat = opt.param_groups[0], opt.state[0], opt._flats[0]

    def kernel_only():
        opt._advance(0, g0, st, flat)
        opt._update(g0, st, flat, 0, flat.size, g0["weight_decay"], g0["l1"], 1.0, float("inf"), {})

    fns = {"cnnkit_ms": opt.step, "cnnkit_kernel_ms": kernel_only}
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    for t, g in zip(tp, grads):
        t.grad = torch.tensor(g)
    fns["torch_default_ms"] = t_cls(tp, **t_kw).step
    if has_fused:
        tq = [torch.tensor(a.copy(), requires_grad=True) for a in init]
        for t, g in zip(tq, grads):
            t.grad = torch.tensor(g)
        fns["torch_fused_ms"] = t_cls(tq, **t_kw, fused=True).step
    res.update(median_ms(fns, evict, repeats))
    gb = n * bpe / 1e9
    res["cnnkit_GBps"] = gb / (res["cnnkit_ms"] / 1e3)
    res["cnnkit_kernel_GBps"] = gb / (res["cnnkit_kernel_ms"] / 1e3)
    res["speedup_vs_torch_default"] = res["torch_default_ms"] / res["cnnkit_ms"]
    if has_fused:
        res["speedup_vs_torch_fused"] = res["torch_fused_ms"] / res["cnnkit_ms"]
        res["kernel_speedup_vs_torch_fused"] = res["torch_fused_ms"] / res["cnnkit_kernel_ms"]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=os.environ.get("CNNKIT_BENCH_CASES", str(CASES_DEFAULT)))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only", nargs="*", default=None, help="case names, e.g. Adam RMSprop")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    cases = json.load(open(args.cases))
    shapes = [tuple(s) for s in cases["optimizer_param_shapes_resnet18"]]
    bpe = cases["optimizer_bytes_per_element"]
    evict = Evictor()
    rng = np.random.default_rng(0)
    rows = []
    print(f"{len(shapes)} tensors, {sum(int(np.prod(s)) for s in shapes):,} float32 elements; "
          f"torch {torch.__version__}, cnnkit {ck.__version__}", flush=True)
    hdr = (f"{'case':13s} {'thr':>3s} {'cnnkit ms':>9s} {'kernel ms':>9s} {'GB/s':>6s} {'torch ms':>9s} "
           f"{'fused ms':>9s} {'x default':>9s} {'x fused':>8s}")
    print(hdr)
    for name in OPTIMIZERS:
        if args.only and name not in args.only:
            continue
        for t in args.threads:
            r = bench_case(name, shapes, bpe[name], t, args.repeats, evict, rng)
            rows.append(r)
            fused = f"{r['torch_fused_ms']:9.2f}" if "torch_fused_ms" in r else f"{'-':>9s}"
            xf = f"{r['speedup_vs_torch_fused']:8.2f}" if "speedup_vs_torch_fused" in r else f"{'-':>8s}"
            print(f"{name:13s} {t:3d} {r['cnnkit_ms']:9.2f} {r['cnnkit_kernel_ms']:9.2f} {r['cnnkit_GBps']:6.1f} "
                  f"{r['torch_default_ms']:9.2f} {fused} {r['speedup_vs_torch_default']:9.2f} {xf}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
