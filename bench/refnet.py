"""The reference net of cases.json's "e2e" section (conv-relu-pool x3, Linear-ReLU-Dropout-Linear), built the
same way for every benchmark: cnnkit's and torch's layer lists side by side, and its random batch. torch is
passed in (never imported here), so a cnnkit-only benchmark process stays torch-free."""
import json
import pathlib

import numpy as np

CASES = pathlib.Path(__file__).resolve().parent / "cases.json"


def spec():
    """cases.json's e2e entry: input (C, H, W), classes, batches."""
    return json.loads(CASES.read_text())["e2e"]


def batch(n, rng, classes=None):
    """(x, y): n random float32 images of the e2e input shape and int64 labels drawn from `rng`."""
    s = spec()
    C, H, W = s["input"]
    x = rng.standard_normal((n, C, H, W), dtype=np.float32)
    y = rng.integers(0, classes or s["classes"], n).astype(np.int64)
    return x, y


def cnnkit_net(ck, classes=None, dropout=True):
    """The cnnkit Sequential (dropout=False leaves the Dropout out)."""
    K = classes or spec()["classes"]
    return ck.Sequential(
        ck.Conv2d(3, 32, 3, padding=1), ck.ReLU(), ck.MaxPool2d(2), ck.Conv2d(32, 64, 3, padding=1), ck.ReLU(),
        ck.MaxPool2d(2), ck.Conv2d(64, 128, 3, padding=1), ck.ReLU(), ck.MaxPool2d(2), ck.Flatten(),
        ck.Linear(2048, 256), ck.ReLU(), *([ck.Dropout(0.5)] if dropout else []), ck.Linear(256, K))


def torch_net(torch, classes=None, dropout=True):
    """The same net in torch.nn, with the same parameter order and layouts."""
    nn = torch.nn
    K = classes or spec()["classes"]
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(2048, 256), nn.ReLU(), *([nn.Dropout(0.5)] if dropout else []),
                         nn.Linear(256, K))
