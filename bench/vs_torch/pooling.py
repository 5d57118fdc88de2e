"""maxpool2d cases: fwd with indices and bwd of each cases.json shape."""
import numpy as np
import torch
import torch.nn.functional as F
from cnnkit import ops

from .timing import HOST, _close


def maxpool_cases(cfg, rng, dev=HOST):
    shape = tuple(cfg["shape"])
    k, s = cfg["kernel"], cfg["stride"]
    label = "x".join(map(str, shape)) + f" k{k}s{s}"
    x = rng.standard_normal(shape, dtype=np.float32)
    y, idx = ops.maxpool2d_fwd(x, k, s)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    nbytes = x.nbytes + y.nbytes + idx.nbytes  # x + y (fp32) + indices (int64); bwd: dy + indices + dx, the same
    tx, tdy, tidx = dev.th(x), dev.th(dy), dev.th(idx)
    x_shape = x.shape
    x, dy, idx = dev.ck(x), dev.ck(dy), dev.ck(idx)

    def ck_fwd():
        return ops.maxpool2d_fwd(x, k, s)

    def th_fwd():
        return F.max_pool2d(tx, k, s, return_indices=True)

    def ck_bwd():
        return ops.maxpool2d_bwd(dy, idx, x_shape)

    def th_bwd():
        return torch.ops.aten.max_pool2d_with_indices_backward(tdy, tx, [k, k], [s, s], [0, 0], [1, 1], False, tidx)

    def check_fwd():
        (cy, ci), (ty, ti) = ck_fwd(), th_fwd()
        return (np.array_equal(dev.ck_host(cy), dev.th_host(ty))
                and np.array_equal(dev.ck_host(ci), dev.th_host(ti)))

    yield label, "fwd", ("GB/s", nbytes), ck_fwd, th_fwd, check_fwd
    yield label, "bwd", ("GB/s", nbytes), ck_bwd, th_bwd, lambda: _close(dev.ck_host(ck_bwd()), dev.th_host(th_bwd()))
