# The `device` fixture: an op test that takes it runs once per device, as Caffe's typed tests run over CPU and
# GPU. "cpu" is numpy through cnnkit._C (compared with the numpy reference), "fakecupy" the strict CuPy
# stand-in of tests/helpers/fakecupy.py (its kernels are the CPU ones, so it must equal the CPU bit for bit;
# what it checks is the device glue of cnnkit.ops: checks, allocation, routing), "cuda" real CuPy on a GPU
# (skipped with cnnkit.cuda.status() as the reason where CUDA is not usable).
import numpy as np
import pytest

import cnnkit

from helpers import fakecupy

DEVICES = ["cpu", "fakecupy", "cuda"]


class Device:
    """One device of a typed test: asarray(a) puts a numpy array on it, host(a) brings an array back."""

    def __init__(self, name, xp):
        self.name = name
        self.xp = xp   # the array module: numpy, the stand-in or cupy

    def asarray(self, a):
        """A copy of numpy array `a` on this device (on the CPU too, so that a kernel writing into it leaves
        `a` as it was, as a host-to-device copy does)."""
        return a.copy() if self.name == "cpu" else self.xp.asarray(a)

    def host(self, a):
        """A numpy array of `a`, which must be on this device (a numpy array on the CPU)."""
        if self.name == "cpu":
            assert isinstance(a, np.ndarray), f"expected a numpy array on the CPU, got {type(a).__name__}"
            return a
        assert isinstance(a, self.xp.ndarray), f"expected a {self.name} array, got {type(a).__name__}"
        return a.get()

    def __repr__(self):
        return self.name


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    name = request.param
    if name == "cpu":
        return Device(name, np)
    if name == "fakecupy":
        return Device(name, fakecupy.install(monkeypatch))
    if not cnnkit.cuda.is_available():
        pytest.skip(f"CUDA unavailable: {cnnkit.cuda.status()}")
    return Device(name, pytest.importorskip("cupy"))
