"""A torch-style ck.Module against the same network as a ck.Graph (ck.zoo.resnet20) and against torch: the time
of one training step (forward, loss, backward, SGD step) of a CIFAR ResNet-20, and the recording overhead of a
Module per layer call.

    python bench/bench_module.py                    # 2 threads, batch 32
    python bench/bench_module.py --threads 1 --batch 64 --repeat 20

The overhead per call is measured on 40 tiny Linear(8, 8) layers: (Module step - Sequential step) / 40 calls,
each the minimum of 300 runs taken alternately, where the kernels take a few microseconds, so the difference is
the recording (nodes, moved caches, the backward engine). torch is optional (its row is skipped without it).
"""
import argparse
import statistics
import time

import numpy as np

import cnnkit as ck
import cnnkit.functional as F
from cnnkit.zoo import ShortcutA


class Block(ck.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = ck.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = ck.BatchNorm2d(planes)
        self.conv2 = ck.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = ck.BatchNorm2d(planes)
        self.shortcut = ShortcutA(stride, (planes - cin) // 2) if stride != 1 or cin != planes else None

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (x if self.shortcut is None else self.shortcut(x)))


class ResNet20(ck.Module):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        self.conv1 = ck.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = ck.BatchNorm2d(width)
        c, stages = width, []
        for i in range(3):
            planes = width * 2 ** i
            blocks = []
            for j in range(3):
                blocks.append(Block(c, planes, 2 if (i > 0 and j == 0) else 1))
                c = planes
            stages.append(ck.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = ck.Linear(c, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Tiny(ck.Module):
    def __init__(self, n):
        super().__init__()
        self.layers = ck.ModuleList([ck.Linear(8, 8, seed=i) for i in range(n)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def _times_ms(step, repeat):
    """(median, minimum) in ms over `repeat` runs after 3 warm-up runs."""
    for _ in range(3):
        step()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def _best_pair_ms(a, b, repeat):
    """Minimum time of a and of b in ms, run alternately (so load from elsewhere hits both alike)."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, f in enumerate((a, b)):
            t0 = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t0)
    return 1e3 * best[0], 1e3 * best[1]


def _ck_step(model, x, y, torch_style):
    opt = ck.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    crit = ck.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        if torch_style:
            crit(model(x), y).backward()
        else:
            _, d = ck.losses.softmax_cross_entropy(ck.autograd.as_array(model(x)), y)
            model.backward(d)
        opt.step()
    return step


def _torch_resnet20(torch):
    nn, tF = torch.nn, torch.nn.functional

    class TBlock(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.pad = (planes - cin) // 2 if stride != 1 or cin != planes else None
            self.stride = stride

        def forward(self, x):
            h = self.bn2(self.conv2(tF.relu(self.bn1(self.conv1(x)))))
            sc = x if self.pad is None else tF.pad(x[:, :, ::self.stride, ::self.stride],
                                                   (0, 0, 0, 0, self.pad, self.pad))
            return tF.relu(h + sc)

    class TNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
            blocks, c = [], 16
            for i in range(3):
                for j in range(3):
                    blocks.append(TBlock(c, 16 * 2 ** i, 2 if (i > 0 and j == 0) else 1))
                    c = 16 * 2 ** i
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(c, 10)

        def forward(self, x):
            x = self.blocks(tF.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(tF.adaptive_avg_pool2d(x, 1), 1))

    return TNet()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    ck.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    rows = [("ck.Module ResNet-20, loss.backward()", _times_ms(_ck_step(ResNet20(), x, y, True), args.repeat)),
            ("ck.Module ResNet-20, model.backward(d)", _times_ms(_ck_step(ResNet20(), x, y, False), args.repeat)),
            ("ck.zoo.resnet20 (Graph)", _times_ms(_ck_step(ck.zoo.resnet20(), x, y, False), args.repeat))]
    try:
        import torch
        torch.set_num_threads(args.threads)
        tnet = _torch_resnet20(torch)
        topt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9)
        xt, yt = torch.tensor(x), torch.tensor(y)

        def tstep():
            topt.zero_grad()
            torch.nn.functional.cross_entropy(tnet(xt), yt).backward()
            topt.step()
        rows.append((f"torch {torch.__version__}", _times_ms(tstep, args.repeat)))
    except ImportError:
        pass
    print(f"training step, batch {args.batch} x 3x32x32 float32, {args.threads} thread(s), {args.repeat} runs:")
    for name, (med, low) in rows:
        print(f"  {name:<40} median {med:9.2f} ms   min {low:9.2f} ms")
    n = 40
    xs = rng.standard_normal((4, 8)).astype(np.float32)
    mod = Tiny(n)
    seq = ck.Sequential(*[ck.Linear(8, 8, seed=i) for i in range(n)])
    dy = np.ones((4, 8), dtype=np.float32)

    def mstep():
        mod(xs)
        mod.backward(dy)

    def sstep():
        seq(xs)
        seq.backward(dy)
    tm, ts = _best_pair_ms(mstep, sstep, 300)
    print(f"recording overhead per layer call (forward + backward), {n} Linear(8, 8) on (4, 8): "
          f"{1e3 * (tm - ts) / n:.1f} us (Module {1e3 * tm / n:.1f} us, Sequential {1e3 * ts / n:.1f} us per layer)")


if __name__ == "__main__":
    main()
