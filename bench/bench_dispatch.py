"""The portable wheel against a -march=native build of the same source, both through bench_vs_torch.py.

    python bench/bench_dispatch.py --portable dist/cnnkit-*-manylinux*.whl --native native/cnnkit-*.whl

Each build runs in its own process (the two cannot share one: both are `cnnkit`), found through PYTHONPATH
from the wheel unpacked into a temporary folder, so nothing is installed. For each CNNKIT_ISA level and each
round the two builds run back to back, alternating which goes first, and each case keeps its fastest time
over the rounds, for cnnkit and for torch (which runs in both processes, so it shows how much the machine's
speed drifted between them). Printed per case: speed = native ms / portable ms (>= 1: the portable build is
as fast), and the same ratio normalised by torch's time in each process; then the geometric mean and the
worst case per level. The native build has one module, so for a forced level it changes only its GEMM
micro-kernel; every other kernel stays -march=native.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def unpack(path, into):
    path = Path(path)
    if path.is_dir():
        return path
    if path.suffix != ".whl" or not path.is_file():
        raise SystemExit(f"{path}: expected a .whl file or a folder holding an unpacked cnnkit")
    with zipfile.ZipFile(path) as z:
        z.extractall(into)
    return Path(into)


def run_once(site, isa, args, out):
    env = dict(os.environ, PYTHONPATH=str(site), CNNKIT_ISA=isa)
    cmd = [sys.executable, str(HERE / "bench_vs_torch.py"), "--threads", str(args.threads), "--only", args.only,
           "--json", str(out)] + (["--repeat", str(args.repeat)] if args.repeat else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"bench_vs_torch failed ({isa}, {site}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    data = json.loads(Path(out).read_text())
    got = data["machine"]["cnnkit"]
    return data["results"], f"{got.get('module_isa')}/{got.get('isa')} {got.get('build_flags')}"


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--portable", required=True, help="the portable wheel (or an unpacked folder)")
    ap.add_argument("--native", required=True, help="the CNNKIT_NATIVE=ON wheel (or an unpacked folder)")
    ap.add_argument("--isas", default="avx512,avx2,generic", help="CNNKIT_ISA levels to run (default all)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each build per level (default 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="conv2d,maxpool2d,dropout,relu,e2e", help="bench_vs_torch --only")
    ap.add_argument("--repeat", type=int, default=None, help="bench_vs_torch --repeat (default: adaptive)")
    ap.add_argument("--json", type=Path, default=None, help="write every case's times here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    tmp = tempfile.TemporaryDirectory()
    sites = {"portable": unpack(args.portable, Path(tmp.name) / "portable"),
             "native": unpack(args.native, Path(tmp.name) / "native")}
    report = {}
    for isa in [s.strip() for s in args.isas.split(",") if s.strip()]:
        best = {}   # (build, op, case, pass) -> (cnnkit ms, torch ms)
        seen = {}
        for rnd in range(args.rounds):
            order = ("portable", "native") if rnd % 2 == 0 else ("native", "portable")
            for build in order:
                rows, desc = run_once(sites[build], isa, args, Path(tmp.name) / f"{build}-{isa}-{rnd}.json")
                seen[build] = desc
                for r in rows:
                    key = (build, r["op"], r["case"], r["pass"])
                    ck, th = r["cnnkit_min_ms"], r["torch_min_ms"]
                    old = best.get(key, (math.inf, math.inf))
                    best[key] = (min(old[0], ck), min(old[1], th))
        print(f"\n== CNNKIT_ISA={isa}: portable {seen['portable']} | native {seen['native']} "
              f"({args.rounds} rounds, {args.threads} threads, fastest of each) ==")
        print(f"{'op':<9} {'case':<24} {'pass':<10} {'portable ms':>11} {'native ms':>10} {'speed':>6} "
              f"{'vs torch':>8}")
        speeds, normed, rows = [], [], []
        for (build, op, case, pas), (ck_p, th_p) in sorted(best.items()):
            if build != "portable":
                continue
            ck_n, th_n = best[("native", op, case, pas)]
            speed, norm = ck_n / ck_p, (th_p / ck_p) / (th_n / ck_n)
            speeds.append(speed)
            normed.append(norm)
            rows.append(dict(op=op, case=case, **{"pass": pas}, portable_ms=ck_p, native_ms=ck_n, speed=speed,
                             torch_normalised=norm, torch_ms_portable_run=th_p, torch_ms_native_run=th_n))
            print(f"{op:<9} {case:<24} {pas:<10} {ck_p:>11.3f} {ck_n:>10.3f} {speed:>6.3f} {norm:>8.3f}")
        worst = min(rows, key=lambda r: r["speed"])
        print(f"geomean speed {geomean(speeds):.3f} (torch-normalised {geomean(normed):.3f}); worst "
              f"{worst['speed']:.3f} ({worst['op']} {worst['case']} {worst['pass']})")
        report[isa] = dict(builds=seen, rows=rows, geomean_speed=geomean(speeds),
                           geomean_torch_normalised=geomean(normed))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
