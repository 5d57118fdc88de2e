"""Shared by the scripts that tests/test_distributed*.py run under mpiexec: the data, the model, and the
flags of every run (one thread per rank)."""
import numpy as np

import cnnkit as ck

B = 8          # batch per rank; the one-process run uses B * world size
STEPS = 50


def data(dtype, steps=STEPS, world=2, n_classes=10):
    rng = np.random.default_rng(0)
    n = B * world * steps
    x = rng.standard_normal((n, 1, 8, 8)).astype(dtype)
    y = rng.integers(0, n_classes, n)
    return x, y


def convnet(dtype, seed=7, bn=False):
    """A small ConvNet: two conv blocks and a linear head; with bn, BatchNorm2d after each convolution."""
    def norm(c):
        return [ck.BatchNorm2d(c, dtype=dtype)] if bn else []
    # a convolution before BatchNorm has no bias (its gradient would be rounding noise around zero)
    return ck.Sequential(ck.Conv2d(1, 6, 3, padding=1, bias=not bn, dtype=dtype), *norm(6), ck.ReLU(),
                         ck.MaxPool2d(2), ck.Conv2d(6, 8, 3, padding=1, bias=not bn, dtype=dtype), *norm(8),
                         ck.ReLU(), ck.Flatten(),
                         ck.Linear(8 * 4 * 4, 10, dtype=dtype), seed=seed)


def resnet_graph(dtype, seed=7):
    """A Graph with a residual Add (a value that fans out) and no BatchNorm."""
    x = ck.Input((1, 8, 8))
    h = ck.ReLU()(ck.Conv2d(1, 6, 3, padding=1, dtype=dtype)(x))
    r = ck.Conv2d(6, 6, 3, padding=1, dtype=dtype)(ck.ReLU()(ck.Conv2d(6, 6, 3, padding=1, dtype=dtype)(h)))
    h = ck.MaxPool2d(2)(ck.ReLU()(ck.Add()(h, r)))
    return ck.Graph(x, ck.Linear(6 * 4 * 4, 10, dtype=dtype)(ck.Flatten()(h)), seed=seed)


class ModuleNet(ck.Module):
    """convnet written the torch way: its layers are recorded one by one by the Module's forward."""

    def __init__(self, dtype, seed=7):
        super().__init__()
        self.body = convnet(dtype, seed)

    def forward(self, x):
        return self.body(x)


MODELS = {"convnet": convnet, "graph": resnet_graph, "module": ModuleNet}


def host(a):
    return a.get() if hasattr(a, "get") else a


def save_params(model, path):
    np.savez(path, **{n: host(p.data) for n, p in model.named_parameters()})
