"""Shared builders for the trainer tests: the small digits ConvNet and its trainer."""
import numpy as np

import cnnkit as ck


def digits():
    return ck.data.load_digits()


def digits_net(seed=0, dropout=0.25):
    ck.manual_seed(seed)  # initial weights
    model = ck.Sequential(ck.Conv2d(1, 16, 3, padding=1), ck.ReLU(), ck.Conv2d(16, 32, 3, padding=1), ck.ReLU(),
                          ck.MaxPool2d(2), ck.Flatten(), ck.Linear(512, 64), ck.ReLU(), ck.Dropout(dropout),
                          ck.Linear(64, 10))
    model.manual_seed(seed)  # dropout streams
    return model


def weights(model):
    return {n: p.data.copy() for n, p in model.named_parameters()}


def accuracy(model, ds):
    x, y = ds[np.arange(len(ds))]
    model.eval()
    try:
        return float((model(np.ascontiguousarray(x)).argmax(axis=1) == y).mean())
    finally:
        model.train()
