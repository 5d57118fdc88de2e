"""The small dataset and the batch collector the DataLoader tests share."""
import numpy as np

from cnnkit import data as D


def dataset(n=53, seed=0):
    """n images (3, 8, 8) of normal noise, labels 0..9 cycling."""
    rng = np.random.default_rng(seed)
    return D.ArrayDataset(rng.standard_normal((n, 3, 8, 8)).astype(np.float32), np.arange(n) % 10)


def collect(loader, k=None):
    """Copies of the (x, y) batches of one pass (the first k when given, leaving the loop by break)."""
    out = []
    for i, (x, y) in enumerate(loader):
        out.append((x.copy(), y.copy()))
        if k is not None and i + 1 == k:
            break
    return out
