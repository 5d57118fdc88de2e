"""Shows that one threading layer owns the cores (no oversubscription).

(a) ops.conv2d_fwd on cases.json's "cifar 32x32" at 1 vs 2 threads; (b) a loop alternating a numpy float32
matmul (numpy's own OpenBLAS, 2 threads) with that conv, vs each alone; (c) the same with a PyTorch conv in
between. Each import-order / environment scenario runs in its own subprocess, since libraries read it at load.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CASES = Path(__file__).resolve().parent / "cases.json"
CASE_LABEL = "cifar 32x32"
MATMUL_N = 1024  # 2 GFLOP per call: the same order of time as the conv on 2 cores

# name -> (import order, extra environment, what it shows)
SCENARIOS = {
    "cnnkit-first": (("cnnkit", "numpy", "torch"), {},
                     "import cnnkit first (its OMP_WAIT_POLICY=PASSIVE, OPENBLAS_THREAD_TIMEOUT=4 defaults "
                     "reach libgomp and numpy's OpenBLAS): the intended use"),
    "numpy-first": (("numpy", "cnnkit", "torch"), {},
                    "numpy imported before cnnkit: numpy's OpenBLAS keeps its default spin"),
    "torch-first": (("torch", "cnnkit", "numpy"), {},
                    "torch (and with it numpy and libgomp) imported first: no cnnkit default reaches either pool"),
    "spin": (("cnnkit", "numpy", "torch"), {"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_THREAD_TIMEOUT": "30"},
             "the fix turned off by the environment: OMP_WAIT_POLICY=ACTIVE, OPENBLAS_THREAD_TIMEOUT=30"),
}
ENV_KEYS = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOMP_SPINCOUNT")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES, help=f"case list (default {DEFAULT_CASES})")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)")
    ap.add_argument("--repeat", type=int, default=None, help="iterations per loop and round (default 8)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of all loops, interleaved (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 iterations, 1 round")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    if bad:
        ap.error(f"--scenarios: unknown {bad}; choose from {','.join(SCENARIOS)}")
    if args.repeat is None:
        args.repeat = 3 if args.quick else 8
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.repeat < 1 or args.rounds < 1:
        ap.error("--repeat and --rounds must be >= 1")
    return args


# ---------------------------------------------------------------- worker (one scenario, one process)

def worker(args, scenario):
    order, _, _ = SCENARIOS[scenario]
    env_at_start = {k: os.environ.get(k) for k in ENV_KEYS}
    mods, env_seen = {}, {}
    for name in order:
        before = {k: os.environ.get(k) for k in ENV_KEYS}
        mods[name] = __import__(name)
        # cnnkit sets its env defaults before it loads anything; torch and numpy load at once
        env_seen[name] = {k: os.environ.get(k) for k in ENV_KEYS} if name == "cnnkit" else before
    # Each pool reads its env once, at load: libgomp (one per process, shared by cnnkit and torch) is loaded
    # by whichever of the two comes first, numpy's OpenBLAS by the first import at all (all three pull numpy).
    gomp_loader = next(n for n in order if n in ("cnnkit", "torch"))
    cnnkit, np, torch = mods["cnnkit"], mods["numpy"], mods["torch"]
    import torch.nn.functional as F
    from cnnkit import ops

    cfg = next(c for c in json.loads(args.cases.read_text())["conv2d"] if c["label"] == CASE_LABEL)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"]), dtype=np.float32)
    w = rng.standard_normal((cfg["K"], cfg["C"], cfg["kernel"], cfg["kernel"]), dtype=np.float32)
    s, p = cfg["stride"], cfg["padding"]
    tx, tw = torch.from_numpy(x.copy()), torch.from_numpy(w.copy())
    a = rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
    b = rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)

    def conv():
        ops.conv2d_fwd(x, w, None, s, p)

    def mm():
        np.matmul(a, b)

    def tconv():
        with torch.no_grad():
            F.conv2d(tx, tw, None, s, p)

    def timed(fn):
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e6

    held = {}  # loop name -> [process CPU seconds, wall seconds]: how many cores the loop actually had

    def loop(parts, n, name):
        """n iterations of the parts in turn; per part, the time of each iteration (ms)."""
        per = [[] for _ in parts]
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(n):
            for i, fn in enumerate(parts):
                per[i].append(timed(fn))
        r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        acc = held.setdefault(name, [0.0, 0.0])
        acc[0] += (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        acc[1] += w1 - w0
        return per

    med = statistics.median
    out = {"scenario": scenario, "import_order": list(order), "env_at_start": env_at_start,
           "env_after_imports": {k: os.environ.get(k) for k in ENV_KEYS},
           "libgomp_saw": {"loaded_by": gomp_loader,
                           "OMP_WAIT_POLICY": env_seen[gomp_loader]["OMP_WAIT_POLICY"]},
           "numpy_openblas_saw": {"loaded_by": order[0],
                                  "OPENBLAS_THREAD_TIMEOUT": env_seen[order[0]]["OPENBLAS_THREAD_TIMEOUT"]},
           "openmp_runtime": sorted({ln.split()[-1] for ln in open("/proc/self/maps")
                                     if "gomp" in os.path.basename(ln.split()[-1])}),
           "loadavg": os.getloadavg()}

    # (a) thread scaling of cnnkit's conv (torch alongside for reference)
    scal = {}
    for nt in (1, 2):
        cnnkit.set_num_threads(nt)
        torch.set_num_threads(nt)
        for fn in (conv, tconv):
            fn()  # warm-up at this thread count
        t_ck, t_th = [], []
        for _ in range(args.rounds):
            t_ck += loop([conv], args.repeat, f"conv_{nt}t")[0]
            t_th += loop([tconv], args.repeat, f"tconv_{nt}t")[0]
        scal[nt] = (med(t_ck), med(t_th))
    out["scaling"] = {"cnnkit_1t_ms": scal[1][0], "cnnkit_2t_ms": scal[2][0], "cnnkit_speedup": scal[1][0] / scal[2][0],
                      "torch_1t_ms": scal[1][1], "torch_2t_ms": scal[2][1], "torch_speedup": scal[1][1] / scal[2][1]}

    # (b), (c): everything at 2 threads; rounds interleave the alone and alternating loops
    cnnkit.set_num_threads(2)
    torch.set_num_threads(2)
    for fn in (conv, mm, tconv):
        fn()
    acc = {k: [] for k in ("conv", "mm", "tconv", "alt_mm.mm", "alt_mm.conv", "alt_t.tconv", "alt_t.conv")}
    for _ in range(args.rounds):
        acc["conv"] += loop([conv], args.repeat, "conv")[0]
        acc["mm"] += loop([mm], args.repeat, "mm")[0]
        acc["tconv"] += loop([tconv], args.repeat, "tconv")[0]
        m, c = loop([mm, conv], args.repeat, "alt_mm")
        acc["alt_mm.mm"] += m
        acc["alt_mm.conv"] += c
        t, c = loop([tconv, conv], args.repeat, "alt_t")
        acc["alt_t.tconv"] += t
        acc["alt_t.conv"] += c
    md = {k: med(v) for k, v in acc.items()}
    # Slowdown = (median time of each part inside the alternating loop, summed) / (the parts' medians alone).
    out["alternation"] = {
        "numpy_matmul": {"other_alone_ms": md["mm"], "cnnkit_alone_ms": md["conv"],
                         "other_in_loop_ms": md["alt_mm.mm"], "cnnkit_in_loop_ms": md["alt_mm.conv"],
                         "slowdown": (md["alt_mm.mm"] + md["alt_mm.conv"]) / (md["mm"] + md["conv"])},
        "torch_conv": {"other_alone_ms": md["tconv"], "cnnkit_alone_ms": md["conv"],
                       "other_in_loop_ms": md["alt_t.tconv"], "cnnkit_in_loop_ms": md["alt_t.conv"],
                       "slowdown": (md["alt_t.tconv"] + md["alt_t.conv"]) / (md["tconv"] + md["conv"])},
    }
    # CPU time / wall time: near 2 when both cores were ours (or spinning), well below when another process
    # held one of them, which caps any 2-thread speedup on a shared machine.
    out["cores_held"] = {k: (c / w if w > 0 else None) for k, (c, w) in held.items()}
    out["cnnkit_build"] = cnnkit.build_info()
    out["torch"] = torch.__version__
    out["numpy"] = np.__version__
    out["loadavg_end"] = os.getloadavg()
    return out


# ---------------------------------------------------------------- driver

def run_scenario(args, scenario):
    _, extra_env, _ = SCENARIOS[scenario]
    env = dict(os.environ, **extra_env)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", scenario, "--cases", str(args.cases),
           "--repeat", str(args.repeat), "--rounds", str(args.rounds)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scenario {scenario} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(args):
    if args._worker:
        print(json.dumps(worker(args, args._worker)))
        return 0
    print(f"conv: cases.json '{CASE_LABEL}' (ops.conv2d_fwd, float32); matmul: numpy float32 "
          f"{MATMUL_N}x{MATMUL_N} @ {MATMUL_N}x{MATMUL_N} (numpy's OpenBLAS); medians of "
          f"{args.rounds}x{args.repeat} iterations")
    print("slowdown = (median time of both parts inside the alternating loop) / (their medians alone); "
          "1.00 = no interference")
    results = []
    for sc in args.scenarios:
        print(f"\n[{sc}] {SCENARIOS[sc][2]}", flush=True)
        r = run_scenario(args, sc)
        results.append(r)
        s = r["scaling"]
        g, nb = r["libgomp_saw"], r["numpy_openblas_saw"]
        print(f"  libgomp {', '.join(r['openmp_runtime'])} (loaded by {g['loaded_by']}) saw "
              f"OMP_WAIT_POLICY={g['OMP_WAIT_POLICY'] or 'unset'}; numpy's OpenBLAS (loaded by "
              f"{nb['loaded_by']}) saw "
              f"OPENBLAS_THREAD_TIMEOUT={nb['OPENBLAS_THREAD_TIMEOUT'] or 'unset (2^28 cycles)'}")
        ch = r["cores_held"]
        print(f"  (a) conv 1 -> 2 threads: cnnkit {s['cnnkit_1t_ms']:.1f} -> {s['cnnkit_2t_ms']:.1f} ms "
              f"(speedup {s['cnnkit_speedup']:.2f}x, CPU/wall {ch['conv_2t']:.2f}); torch {s['torch_1t_ms']:.1f} -> "
              f"{s['torch_2t_ms']:.1f} ms (speedup {s['torch_speedup']:.2f}x); load {r['loadavg'][0]:.2f}")
        print(f"      {'alternating with':<22} {'other alone':>11} {'in loop':>8} {'cnnkit alone':>12} "
              f"{'in loop':>8} {'slowdown':>8} {'CPU/wall':>8}")
        for tag, key, loop_name in (("(b) numpy matmul", "numpy_matmul", "alt_mm"),
                                    ("(c) torch conv2d", "torch_conv", "alt_t")):
            a = r["alternation"][key]
            print(f"  {tag:<26} {a['other_alone_ms']:>11.1f} {a['other_in_loop_ms']:>8.1f} "
                  f"{a['cnnkit_alone_ms']:>12.1f} {a['cnnkit_in_loop_ms']:>8.1f} {a['slowdown']:>8.2f} "
                  f"{ch[loop_name]:>8.2f}", flush=True)

    print()
    for r in results:
        if r["cores_held"]["conv_2t"] < 1.7:
            print(f"note: [{r['scenario']}] the 2-thread conv got {r['cores_held']['conv_2t']:.2f} s of CPU per "
                  f"second: another process held part of the machine, which caps its speedup")
    print(f"{'scenario':<14} {'conv 2t speedup':>15} {'slowdown numpy':>15} {'slowdown torch':>15} {'load':>5}")
    for r in results:
        print(f"{r['scenario']:<14} {r['scaling']['cnnkit_speedup']:>15.2f} "
              f"{r['alternation']['numpy_matmul']['slowdown']:>15.2f} "
              f"{r['alternation']['torch_conv']['slowdown']:>15.2f} {r['loadavg'][0]:>5.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
