"""What ck.profiler costs: the reference net's training step (bench/cases.json "e2e") with the profiler never
entered, entered and exited before the steps (disabled: its hooks test one global and find nothing), and
recording (enabled).

Each mode runs in its own child process, so that "never" starts from a process no profile has touched; rounds
alternate the order of the modes. A child builds the net, Adam and one random batch, warms up, then times
single steps. Reported per mode over all rounds: the median and the fastest step (wall time; on a shared
machine the minimum is the steadier of the two) and the median CPU time of the process per step (all threads:
what other processes' load changes least), each with its ratio to "never". ``--baseline DIR`` adds a mode
that runs the same steps on a cnnkit without the profiler (DIR: its python/ folder, compiled modules
included): what the hooks themselves cost. Last, ck.ops.relu_fwd on 16 floats in ns per call (one hook), and
what recording costs per range, times the ranges of one step.

    python bench/bench_profiler.py [--batch 32] [--steps 15] [--rounds 4] [--threads 2] [--baseline DIR]
                                   [--json out.json]
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
MODES = ("never", "disabled", "enabled")


def _child(mode, batch, steps, threads):
    import numpy as np

    import cnnkit as ck
    import refnet
    ck.set_num_threads(threads)
    x, y = refnet.batch(batch, np.random.default_rng(0))
    model = refnet.cnnkit_net(ck)
    opt = ck.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        _, d = ck.losses.softmax_cross_entropy(model(x), y)
        model.backward(d)
        opt.step()

    small = np.ones(16, np.float32)

    def op_ns(n=20000):
        t = time.perf_counter_ns()
        for _ in range(n):
            ck.ops.relu_fwd(small)
        return (time.perf_counter_ns() - t) / n

    if mode == "disabled":
        with ck.profiler.profile():
            step()   # the profiler has run once (its kernel wrappers exist), then is left
    for _ in range(3):
        step()
    prof = ck.profiler.profile() if mode == "enabled" else None
    times, cpu = [], []
    if prof is not None:
        prof.__enter__()
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    out = {"step_s": times, "cpu_s": cpu}
    if prof is not None:
        def range_ns(n=20000):   # one record_function range entered and left while recording
            t = time.perf_counter_ns()
            for _ in range(n):
                with ck.profiler.record_function("r"):
                    pass
            return (time.perf_counter_ns() - t) / n
        out["range_ns"] = min(range_ns() for _ in range(3))
        prof.__exit__(None, None, None)
        out["events"] = sum(e["name"] != "r" for e in prof.events())
    else:
        out["op_ns"] = min(op_ns() for _ in range(3))
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--baseline", help="also time a cnnkit without the profiler: its python/ folder (PYTHONPATH)")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return _child(a.child, a.batch, a.steps, a.threads)
    modes = MODES + (("baseline",) if a.baseline else ())
    got = {m: {"step_s": [], "cpu_s": [], "op_ns": []} for m in modes}
    events, range_ns = 0, float("inf")
    for k in range(a.rounds):
        for mode in modes if k % 2 == 0 else modes[::-1]:   # alternate the order: drift hits every mode alike
            env = dict(os.environ, PYTHONPATH=a.baseline) if mode == "baseline" else None
            r = subprocess.run([sys.executable, __file__, "--child", "never" if mode == "baseline" else mode,
                                "--batch", str(a.batch), "--steps", str(a.steps), "--threads", str(a.threads)],
                               capture_output=True, text=True, check=True, env=env)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            got[mode]["step_s"] += m["step_s"]
            got[mode]["cpu_s"] += m["cpu_s"]
            if "op_ns" in m:
                got[mode]["op_ns"].append(m["op_ns"])
            if "range_ns" in m:
                events, range_ns = m["events"], min(range_ns, m["range_ns"])
    med = {m: statistics.median(got[m]["step_s"]) for m in modes}
    low = {m: min(got[m]["step_s"]) for m in modes}
    cpu = {m: statistics.median(got[m]["cpu_s"]) for m in modes}
    print(f"reference-net training step, batch {a.batch}, {a.threads} threads, {a.rounds} rounds x {a.steps} steps "
          f"per mode; ratios to never")
    print(f"  {'mode':9} {'median':>9}  {'ratio':>6}  {'minimum':>9}  {'ratio':>6}  {'CPU time':>9}  {'ratio':>6}")
    for m in modes:
        print(f"  {m:9} {med[m] * 1e3:6.2f} ms  {med[m] / med['never']:6.3f}  {low[m] * 1e3:6.2f} ms  "
              f"{low[m] / low['never']:6.3f}  {cpu[m] * 1e3:6.2f} ms  {cpu[m] / cpu['never']:6.3f}")
    op = {m: min(got[m]["op_ns"]) for m in modes if got[m]["op_ns"]}
    print(f"  load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("  ck.ops.relu_fwd on 16 floats: " + ", ".join(f"{v:.0f} ns {m}" for m, v in op.items()))
    per_step = events / a.steps
    print(f"  enabled: {per_step:.0f} ranges per step, {range_ns:.0f} ns per range (a record_function entered and "
          f"left): {per_step * range_ns / 1e6:.3f} ms, {100 * per_step * range_ns * 1e-9 / low['never']:.2f}% of the "
          f"fastest step")
    if a.json:
        res = {"median_step_s": med, "min_step_s": low, "median_cpu_s": cpu, "op_ns": op, "range_ns": range_ns,
               "events_per_step": per_step, "load_average": os.getloadavg(), "raw": got}
        pathlib.Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
