"""--device cuda: every section on GPU 0 in one process, and its report."""
import json
import sys
import traceback

import cnnkit
import numpy as np
import torch

from .adam import adam_cases_cuda
from .conv import conv_cases
from .e2e import e2e_cases
from .elementwise import dropout_cases, relu_cases
from .machine import cuda_info, geomean
from .pooling import maxpool_cases
from .timing import CudaArrays, Skipped, time_pair_cuda


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
