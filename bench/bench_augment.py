"""Time the augmentation pipeline (random crop with padding 4, flip, colour jitter) on 3x32x32 float32 batches
of 128, in images per second, and compare loading + augmenting one batch with the reference net's training step
(bench cases.json "e2e": conv32-conv64-conv128 with 2x2 pools, linear 2048-256-10, dropout, Adam) at the same
thread count. The budget (issue 5) is under 10% of the step. Run on an idle machine:

    OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4 python bench/bench_augment.py --threads 2
"""
import argparse
import json
import statistics
import time

import numpy as np

import cnnkit as ck
from cnnkit import data as D


def median_time(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_augment(batch, threads, repeats):
    rng = np.random.default_rng(0)
    n = 10 * batch
    x = rng.random((n, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, n)
    aug = D.Compose([D.RandomCrop(32, padding=4), D.RandomHorizontalFlip(), D.ColorJitter(0.4, 0.4, 0.4)])
    xb = np.ascontiguousarray(x[:batch])
    ids = np.arange(batch, dtype=np.int64)
    out = {}
    out["augment_s"] = median_time(lambda: aug(xb, ids=ids, seed=0, num_threads=threads), repeats)
    for name, t in (("crop_s", aug.transforms[0]), ("flip_s", aug.transforms[1]), ("jitter_s", aug.transforms[2])):
        out[name] = median_time(lambda t=t: t(xb, ids=ids, seed=0, num_threads=threads), repeats)
    loader = D.DataLoader((x, y), batch, seed=0, transform=aug, prefetch=False, num_threads=threads)
    order = loader.order(0)
    out["load_and_augment_s"] = median_time(lambda: loader._make_batch(order, 0, 3, threads), repeats)
    out["augment_images_per_s"] = batch / out["augment_s"]
    return out


def bench_torch_step(batch, threads, repeats):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(2048, 256), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xb = torch.rand(batch, 3, 32, 32)
    yb = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        loss.backward()
        opt.step()
    return median_time(step, repeats)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    ck.set_num_threads(args.threads)
    res = {"threads": args.threads, "batch": args.batch}
    res.update(bench_augment(args.batch, args.threads, args.repeats))
    try:
        res["torch_step_s"] = bench_torch_step(args.batch, args.threads, max(5, args.repeats // 2))
        res["load_and_augment_over_step"] = res["load_and_augment_s"] / res["torch_step_s"]
    except ImportError:
        res["torch_step_s"] = None
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in res.items()}, indent=1))
    ms = 1e3
    print(f"augment (crop pad 4 + flip + jitter), {args.batch}x3x32x32 float32, {args.threads} threads: "
          f"{res['augment_s'] * ms:.2f} ms/batch = {res['augment_images_per_s']:,.0f} images/s "
          f"(crop {res['crop_s'] * ms:.2f}, flip {res['flip_s'] * ms:.2f}, jitter {res['jitter_s'] * ms:.2f} ms)")
    if res["torch_step_s"]:
        print(f"load + augment one batch: {res['load_and_augment_s'] * ms:.2f} ms; reference-net step (PyTorch "
              f"{args.threads} threads): {res['torch_step_s'] * ms:.1f} ms; ratio "
              f"{100 * res['load_and_augment_over_step']:.1f}% (budget 10%)")


if __name__ == "__main__":
    main()
