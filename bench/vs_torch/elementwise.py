"""Dropout (fwd, bwd) and relu fwd cases: memory-bound elementwise ops."""
import numpy as np
import torch
from cnnkit import ops

from .timing import HOST, _close

RELU_SHAPE = (128, 64, 32, 32)  # not in cases.json: the first maxpool2d input, where the reference net has a relu


def dropout_cases(cfg, rng, dev=HOST):
    shape = tuple(cfg["shape"])
    p = float(cfg["p"])
    label = "x".join(map(str, shape)) + f" p={p:g}"
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    _, mask = ops.dropout_fwd(x, p, seed=1234)
    tx, tdy = dev.th(x), dev.th(dy)
    tmask = dev.th(mask.astype(bool))  # same mask for both, so the bwd results can be compared
    scale = 1.0 / (1.0 - p)
    nbytes = 9 * x.size  # fp32 in, fp32 out, 1-byte mask, in each direction
    counter = [0]
    x_host = x
    x, dy, mask = dev.ck(x), dev.ck(dy), dev.ck(mask)

    def ck_fwd():
        counter[0] += 1  # a fresh mask per call, as in training
        return ops.dropout_fwd(x, p, seed=1234, offset=counter[0] * x.size)

    def th_fwd():
        return torch.native_dropout(tx, p, True)

    def ck_bwd():
        return ops.dropout_bwd(dy, mask, p)

    def th_bwd():
        return torch.ops.aten.native_dropout_backward(tdy, tmask, scale)

    def check_fwd():
        y, m = (dev.ck_host(a) for a in ck_fwd())
        keep = m.mean()
        return abs(keep - (1 - p)) < 0.01 and _close(y, x_host * m.astype(np.float32) * np.float32(scale), 1e-6)

    yield label, "fwd", ("GB/s", nbytes), ck_fwd, th_fwd, check_fwd
    yield (label, "bwd", ("GB/s", nbytes), ck_bwd, th_bwd,
           lambda: _close(dev.ck_host(ck_bwd()), dev.th_host(th_bwd()), 1e-6))


def relu_cases(rng, dev=HOST):
    x = rng.standard_normal(RELU_SHAPE, dtype=np.float32)
    tx = dev.th(x)
    nbytes = 2 * x.nbytes
    x = dev.ck(x)
    label = "x".join(map(str, RELU_SHAPE)) + " (extra)"
    yield (label, "fwd", ("GB/s", nbytes), lambda: ops.relu_fwd(x), lambda: torch.relu(tx),
           lambda: np.array_equal(dev.ck_host(ops.relu_fwd(x)), dev.th_host(torch.relu(tx))))
