"""A search objective with a known optimum that says which process ran it (importable by pool workers)."""
import math
import os

from cnnkit.search import LogUniform, Uniform

SPACE = {"lr": LogUniform(1e-5, 1.0), "wd": Uniform(0.0, 1.0)}


def bowl(params, epochs):
    d = (math.log10(params["lr"]) + 2.5) ** 2 + (params["wd"] - 0.3) ** 2
    return {"val_acc": 1.0 - d / (1 + 0.1 * epochs), "pid": os.getpid()}
