"""Time the augmentation pipeline (random crop with padding 4, flip, colour jitter) on 3x32x32 float32 batches
of 128, in images per second, and compare loading + augmenting one batch with the reference net's training step
(bench cases.json "e2e": conv32-conv64-conv128 with 2x2 pools, linear 2048-256-10, dropout, Adam) at the same
thread count. The budget is under 10% of the step. Run on an idle machine:

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
    loader = D.DataLoader((x, y), batch, shuffle=True, seed=0, transform=aug, prefetch=False, num_threads=threads)
    order = loader.order(0)
    scratch = {}  # as inside one iteration: the gather buffer is reused from batch to batch
    out["load_and_augment_s"] = median_time(lambda: loader._make_batch(order, 0, 3, threads, scratch), repeats)
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


def cnnkit_step_fn(batch, seed=0):
    """One training step of the reference net written directly on cnnkit.ops (numpy for the linear layers,
    softmax cross-entropy and Adam), until the layer and optimizer modules land in this branch."""
    from cnnkit import ops
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    params = [he((32, 3, 3, 3), 27), np.zeros(32, np.float32), he((64, 32, 3, 3), 288), np.zeros(64, np.float32),
              he((128, 64, 3, 3), 576), np.zeros(128, np.float32), he((2048, 256), 2048), np.zeros(256, np.float32),
              he((256, 10), 256), np.zeros(10, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    xb = rng.random((batch, 3, 32, 32), dtype=np.float32)
    yb = rng.integers(0, 10, batch)
    state = {"t": 0}

    def step():
        w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = params
        acts, h = [], xb
        for w, b in ((w1, b1), (w2, b2), (w3, b3)):
            c = ops.conv2d_fwd(h, w, b, padding=1)
            r = ops.relu_fwd(c)
            p, idx = ops.maxpool2d_fwd(r, 2)
            acts.append((h, r, idx))
            h = p
        flat = h.reshape(batch, -1)
        z = flat @ w4 + b4
        a = ops.relu_fwd(z)
        d, mask = ops.dropout_fwd(a, 0.5, seed=1, offset=state["t"])
        s = d @ w5 + b5
        s = s - s.max(axis=1, keepdims=True)
        pr = np.exp(s)
        pr /= pr.sum(axis=1, keepdims=True)
        pr[np.arange(batch), yb] -= 1
        ds = (pr / batch).astype(np.float32)
        grads = [None] * 10
        grads[8], grads[9] = d.T @ ds, ds.sum(axis=0)
        dd = ds @ w5.T
        da = ops.dropout_bwd(np.ascontiguousarray(dd), mask, 0.5)
        dz = ops.relu_bwd(da, a)
        grads[6], grads[7] = flat.T @ dz, dz.sum(axis=0)
        dh = np.ascontiguousarray((dz @ w4.T).reshape(h.shape))
        for k in (2, 1, 0):
            hin, r, idx = acts[k]
            dr = ops.maxpool2d_bwd(dh, idx, r.shape)
            dc = ops.relu_bwd(dr, r)
            grads[2 * k] = ops.conv2d_bwd_weight(dc, hin, params[2 * k].shape, padding=1)
            grads[2 * k + 1] = ops.conv2d_bwd_bias(dc)
            if k:
                dh = ops.conv2d_bwd_data(dc, params[2 * k], hin.shape, padding=1)
        state["t"] += 1
        t = state["t"]
        c1, c2 = 1 - 0.9**t, 1 - 0.999**t
        for p, g, mi, vi in zip(params, grads, m, v):
            mi *= 0.9
            mi += 0.1 * g
            vi *= 0.999
            vi += 0.001 * g * g
            p -= (1e-3 / c1) * mi / (np.sqrt(vi / c2) + 1e-8)
    return step


def bench_overlap(batch, threads, step, steps=10):
    """Seconds per iteration of a loop that trains on loader batches (prefetch on), minus the bare step."""
    rng = np.random.default_rng(0)
    n = batch * (steps + 3)
    x = rng.random((n, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, n)
    aug = D.Compose([D.RandomCrop(32, padding=4), D.RandomHorizontalFlip(), D.ColorJitter(0.4, 0.4, 0.4)])
    loader = D.DataLoader((x, y), batch, shuffle=True, seed=0, transform=aug, prefetch=True, drop_last=True,
                          num_threads=threads)
    it = iter(loader)
    next(it)
    step()
    t0 = time.perf_counter()
    k = 0
    for _ in it:
        step()
        k += 1
    with_loader = (time.perf_counter() - t0) / k
    return with_loader


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    ck.set_num_threads(args.threads)
    res = {"threads": args.threads, "batch": args.batch}
    res.update(bench_augment(args.batch, args.threads, args.repeats))
    step = cnnkit_step_fn(args.batch)
    res["cnnkit_step_s"] = median_time(step, max(5, args.repeats // 2))
    res["load_and_augment_over_cnnkit_step"] = res["load_and_augment_s"] / res["cnnkit_step_s"]
    res["cnnkit_loop_with_prefetching_loader_s"] = bench_overlap(args.batch, args.threads, step)
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
    print(f"reference-net step on cnnkit.ops: {res['cnnkit_step_s'] * ms:.1f} ms; load + augment is "
          f"{100 * res['load_and_augment_over_cnnkit_step']:.1f}% of it; a training loop fed by the prefetching "
          f"loader takes {res['cnnkit_loop_with_prefetching_loader_s'] * ms:.1f} ms per step")
    if res["torch_step_s"]:
        print(f"load + augment one batch: {res['load_and_augment_s'] * ms:.2f} ms; reference-net step (PyTorch "
              f"{args.threads} threads): {res['torch_step_s'] * ms:.1f} ms; ratio "
              f"{100 * res['load_and_augment_over_step']:.1f}% (budget 10%)")


if __name__ == "__main__":
    main()
