"""Images per second of loading + augmenting CIFAR-shaped batches: uint8 3x32x32 -> float32 / 255, random crop
(padding 4), horizontal flip, Normalize, in batches of 128, with cnnkit's DataLoader (C++ transforms, worker
threads) at num_workers 0, 1, 2 and torch's DataLoader (worker processes, no torchvision) with the same
transforms in numpy per sample, as a torch Dataset does them, at num_workers 0, 1, 2. One run, under a minute.
CIFAR-10 from --cifar PATH (the binary or python folder) if given, else synthetic images. Run on an idle machine:

    OMP_WAIT_POLICY=PASSIVE python bench/bench_loader.py --threads 2
"""
import argparse
import statistics
import time

import numpy as np

import cnnkit as ck
from cnnkit import data as D

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def images(path, n):
    if path:
        ds = D.load_cifar10(path, dtype=np.uint8)["train"]
        return ds.x[:n], ds.y[:n], "CIFAR-10"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n), "synthetic"


def to_float(x):
    return np.multiply(x, np.float32(1 / 255), dtype=np.float32)


def warm(loader):
    """One batch, so that worker start-up (torch's persistent processes) is timed by no round."""
    it = iter(loader)
    next(it)
    del it


def rate(loader):
    """Images per second over one pass."""
    t0, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


def cnnkit_loader(x, y, batch, workers):
    aug = D.Compose([to_float, D.RandomCrop(32, padding=4), D.RandomHorizontalFlip(), D.Normalize(MEAN, STD)])
    return D.DataLoader((x, y), batch, shuffle=True, seed=0, transform=aug, num_workers=workers, drop_last=True)


class NumpyAugmented:
    """torch's idiom: a map Dataset whose __getitem__ augments one sample in numpy (the same four steps)."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.mean = np.array(MEAN, np.float32).reshape(3, 1, 1)
        self.std = np.array(STD, np.float32).reshape(3, 1, 1)
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = to_float(self.x[i])
        oy, ox = self.rng.integers(0, 9, 2)
        padded = np.zeros((3, 40, 40), np.float32)
        padded[:, 4:36, 4:36] = img
        img = padded[:, oy:oy + 32, ox:ox + 32]
        if self.rng.random() < 0.5:
            img = img[:, :, ::-1]
        return np.ascontiguousarray((img - self.mean) / self.std), self.y[i]


def torch_loader(torch, x, y, batch, workers):
    return torch.utils.data.DataLoader(NumpyAugmented(x, y), batch_size=batch, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="cnnkit's and torch's intra-op threads")
    p.add_argument("--n", type=int, default=10240, help="images per epoch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="passes timed per row (the median is reported)")
    p.add_argument("--cifar", default=None, help="a CIFAR-10 folder (else synthetic data)")
    args = p.parse_args()
    ck.set_num_threads(args.threads)
    x, y, what = images(args.cifar, args.n)
    print(f"{what} {x.shape[0]} x 3x32x32 uint8, batch {args.batch}, {args.rounds} rounds of one pass, "
          f"{args.threads} threads; to float, crop (padding 4), flip, Normalize")
    loaders = [(f"cnnkit num_workers={w}", cnnkit_loader(x, y, args.batch, w)) for w in (0, 1, 2)]
    try:
        import torch
    except ImportError:
        torch = None
        print("torch is not installed: its rows are skipped")
    if torch is not None:
        torch.set_num_threads(args.threads)
        loaders += [(f"torch  num_workers={w}", torch_loader(torch, x, y, args.batch, w)) for w in (0, 1, 2)]
    for _, loader in loaders:
        warm(loader)
    rates = {name: [] for name, _ in loaders}
    for _ in range(args.rounds):   # interleaved, so that a busy spell on the machine hits every row alike
        for name, loader in loaders:
            rates[name].append(rate(loader))
    med = {name: statistics.median(r) for name, r in rates.items()}
    base = med.get("torch  num_workers=0")
    print(f"{'':24s} {'median':>10s}       {'min':>8s} {'max':>8s}")
    for name, r in rates.items():
        extra = f"  {med[name] / base:5.1f}x torch num_workers=0" if base else ""
        print(f"{name:24s} {med[name]:10,.0f} img/s {min(r):8,.0f} {max(r):8,.0f}{extra}")

if __name__ == "__main__":
    main()
