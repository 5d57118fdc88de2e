"""The CPU run at each thread count, and its report."""
import contextlib
import json
import os
import sys

import cnnkit
import numpy as np
import torch

from .conv import conv_cases
from .e2e import e2e_cases
from .elementwise import dropout_cases, relu_cases
from .machine import _warn_load, geomean, machine_info
from .pooling import maxpool_cases
from .timing import time_pair


def main_cpu(args):
    """The CPU run: every section at each thread count, and its report."""
    cases = json.loads(args.cases.read_text())
    info = machine_info(args)
    bi = info["cnnkit"]
    print(f"cnnkit {bi.get('version')} ({bi.get('simd')}, GEMM {bi.get('isa')}) vs torch {info['torch']} "
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
