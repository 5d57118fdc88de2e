"""Peak memory of a reference-net training step (bench/cases.json "e2e"), cnnkit against torch, each library
alone in its own child process (so neither's allocator or code pages count for the other).

Each child imports only its library and numpy, builds the net, an Adam optimizer and one random batch, runs
one warm-up step, then resets the kernel's high-water mark (/proc/self/clear_refs "5") and runs three more
steps. Reported per batch size: resident memory before the timed steps (code, weights, optimizer state,
batch, warm allocator caches), the peak during the steps (VmHWM), and the step's own peak (their
difference), in MiB.

    python bench/bench_memory.py [--batches 32 128 256] [--json out.json]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def _status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(lib, batch, threads):
    import numpy as np

    import refnet
    x, y = refnet.batch(batch, np.random.default_rng(0))
    if lib == "cnnkit":
        import cnnkit as ck
        ck.set_num_threads(threads)
        model = refnet.cnnkit_net(ck)
        opt = ck.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            _, d = ck.losses.softmax_cross_entropy(model(x), y)
            model.backward(d)
            opt.step()
    else:
        import torch
        torch.set_num_threads(threads)
        net = refnet.torch_net(torch)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(tx), ty).backward()
            opt.step()
    step()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _status_kib("VmRSS")
    for _ in range(3):
        step()
    peak = _status_kib("VmHWM")
    print(json.dumps({"rss_before_mib": before / 1024, "peak_mib": peak / 1024, "step_mib": (peak - before) / 1024}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--child", nargs=2, metavar=("LIB", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return _child(a.child[0], int(a.child[1]), a.threads)
    rows = []
    print(f"{'batch':>5}  {'library':7}  {'before MiB':>10}  {'peak MiB':>9}  {'step MiB':>9}")
    for batch in a.batches:
        for lib in ("cnnkit", "torch"):
            r = subprocess.run([sys.executable, __file__, "--threads", str(a.threads), "--child", lib, str(batch)],
                               capture_output=True, text=True, check=True, env=os.environ)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append({"batch": batch, "library": lib, **m})
            print(f"{batch:5d}  {lib:7}  {m['rss_before_mib']:10.1f}  {m['peak_mib']:9.1f}  {m['step_mib']:9.1f}")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
