"""conv2d cases: fwd, bwd_data and bwd_weight of each cases.json shape."""
import math

import numpy as np
import torch
import torch.nn.functional as F
from cnnkit import ops

from .timing import HOST, _close


def conv_cases(cfg, rng, dev=HOST, tol=2e-3):
    """Yield (label, pass, flops, ck_fn, th_fn, check_fn) for the conv2d shapes."""
    N, C, H, W, K, R = cfg["N"], cfg["C"], cfg["H"], cfg["W"], cfg["K"], cfg["kernel"]
    s, p = cfg["stride"], cfg["padding"]
    stride, padding, dilation, groups = (s, s), (p, p), (1, 1), 1
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = rng.standard_normal((K, C // groups, R, R), dtype=np.float32) * np.float32(1.0 / math.sqrt(C * R * R))
    _, _, P, Q = ops.conv2d_out_shape(x.shape, w.shape, stride, padding, dilation, groups)
    dy = rng.standard_normal((N, K, P, Q), dtype=np.float32)
    x_shape = x.shape
    tx, tw, tdy = (dev.th(a) for a in (x, w, dy))
    x, w, dy = (dev.ck(a) for a in (x, w, dy))
    flops = 2.0 * N * K * P * Q * (C // groups) * R * R

    def ck_fwd():
        return ops.conv2d_fwd(x, w, None, stride, padding, dilation, groups)

    def th_fwd():
        return F.conv2d(tx, tw, None, stride, padding, dilation, groups)

    def ck_bd():
        return ops.conv2d_bwd_data(dy, w, x_shape, stride, padding, dilation, groups)

    def th_bd():
        return torch.ops.aten.convolution_backward(tdy, tx, tw, None, list(stride), list(padding), list(dilation),
                                                   False, [0, 0], groups, [True, False, False])[0]

    def ck_bw():
        return ops.conv2d_bwd_weight(dy, x, w.shape, stride, padding, dilation, groups)

    def th_bw():
        return torch.ops.aten.convolution_backward(tdy, tx, tw, None, list(stride), list(padding), list(dilation),
                                                   False, [0, 0], groups, [False, True, False])[1]

    for name, ck_fn, th_fn in (("fwd", ck_fwd, th_fwd), ("bwd_data", ck_bd, th_bd), ("bwd_weight", ck_bw, th_bw)):
        yield (cfg["label"], name, ("GFLOP/s", flops), ck_fn, th_fn,
               lambda c=ck_fn, t=th_fn: _close(dev.ck_host(c()), dev.th_host(t()), tol))
