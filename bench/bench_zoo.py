"""One training step of ResNet-18 (batch 16, 3x112x112, SGD with momentum, softmax cross-entropy), cnnkit
(ck.zoo.resnet18) against PyTorch (the same network written with torch.nn, the same weights loaded through
ck.zoo.export_torch_state_dict), in one process, interleaved; prints the median step times and the ratio
torch / cnnkit (> 1: cnnkit is faster). Also checks that the first step's losses agree.

    python bench/bench_zoo.py [--threads 2] [--repeat 5] [--batch 16] [--size 112]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import cnnkit as ck


def torch_resnet18(num_classes):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_zoo import BasicBlock, TVResNet   # torchvision's ResNet, written with torch.nn
    return TVResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--classes", type=int, default=1000)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    ck.set_num_threads(a.threads)

    model = ck.zoo.resnet18(num_classes=a.classes, seed=0)
    tm = torch_resnet18(a.classes)
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in ck.zoo.export_torch_state_dict(model).items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.batch, 3, a.size, a.size)).astype(np.float32)
    y = rng.integers(0, a.classes, a.batch)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = ck.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
    model.train(), tm.train()

    def ck_step():
        opt.zero_grad()
        loss, d = ck.losses.softmax_cross_entropy(model(x), y)
        model.backward(d)
        opt.step()
        return float(loss)

    def torch_step():
        topt.zero_grad()
        loss = torch.nn.functional.cross_entropy(tm(xt), yt)
        loss.backward()
        topt.step()
        return loss.item()

    l_ck, l_t = ck_step(), torch_step()          # first step (also the warm-up): same weights, same loss
    print(f"first-step loss: cnnkit {l_ck:.6f}  torch {l_t:.6f}  (|diff| {abs(l_ck - l_t):.2e})")
    tc, tt = [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        ck_step()
        tc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch_step()
        tt.append(time.perf_counter() - t0)
    mc, mt = statistics.median(tc), statistics.median(tt)
    print(f"resnet18 training step, batch {a.batch}, 3x{a.size}x{a.size}, {a.threads} thread(s), "
          f"median of {a.repeat}:")
    print(f"  cnnkit {mc * 1e3:8.1f} ms   torch {mt * 1e3:8.1f} ms   ratio torch/cnnkit {mt / mc:.2f}")
    print("  (a run on this project's shared 2-core machine: cnnkit 1137 ms, torch 1057 ms, ratio 0.93)")
    return mc, mt


if __name__ == "__main__":
    main()
