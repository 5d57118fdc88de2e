"""Run one fixed battery of cnnkit kernels and save every result to an .npz (argv[1]).

tests/test_isa_dispatch.py runs this script once per instruction-set level (CNNKIT_ISA=avx512|avx2|generic,
each in a fresh process, since the level is chosen when cnnkit loads) and compares the files. Inputs come
from fixed seeds, so every run sees the same numbers. Keys starting with "exact/" hold results the kernels
promise bit for bit on every level (max-pool values and indices, dropout masks and outputs, ReLU, the
augmentation pipeline); "sum<k>/<name>" holds a result of k-term sums (GEMM, convolution, batch norm),
which the levels may round differently (FMA or not, other tile shapes); "step/" holds a short training
run's losses and weights.
"""
import sys

import numpy as np

import cnnkit as ck
from cnnkit import ops
from cnnkit.data import transforms as T


def battery():
    rng = np.random.default_rng(1234)
    out = {"info/module_isa": np.array(ck.build_info()["module_isa"]), "info/isa": np.array(ck.build_info()["isa"])}

    def f32(*shape):
        return rng.uniform(-1, 1, shape).astype(np.float32)

    # GEMM through matmul, every transpose pair, with shapes that leave edge tiles on every level.
    a, b = f32(67, 301), f32(301, 53)
    for ta in (False, True):
        for tb in (False, True):
            out[f"sum301/matmul_{int(ta)}{int(tb)}"] = ops.matmul(a.T.copy() if ta else a, b.T.copy() if tb else b,
                                                                   trans_a=ta, trans_b=tb)
    # Convolution: each pass, on the GEMM path and (3x3, stride 1) Winograd, plus a strided, dilated and
    # grouped case; the reduction length is the filter's C/groups * R * S (times N*P*Q for bwd_weight).
    x, w, bias = f32(2, 8, 12, 12), f32(16, 8, 3, 3), f32(16)
    for alg in ("gemm", "winograd"):
        y = ops.conv2d_fwd(x, w, bias, padding=1, algorithm=alg)
        dy = f32(*y.shape)
        out[f"sum72/conv3x3_{alg}_fwd"] = y
        out[f"sum144/conv3x3_{alg}_bwd_data"] = ops.conv2d_bwd_data(dy, w, x.shape, padding=1, algorithm=alg)
        out[f"sum288/conv3x3_{alg}_bwd_weight"] = ops.conv2d_bwd_weight(dy, x, w.shape, padding=1, algorithm=alg)
    out["sum72/conv3x3_relu_fwd"] = ops.conv2d_fwd(x, w, bias, padding=1, relu=True)
    x2, w2 = f32(3, 6, 11, 13), f32(9, 2, 3, 3)
    kw = dict(stride=2, padding=2, dilation=2, groups=3)
    y2 = ops.conv2d_fwd(x2, w2, None, **kw)
    dy2 = f32(*y2.shape)
    out["sum18/conv_grouped_fwd"] = y2
    out["sum27/conv_grouped_bwd_data"] = ops.conv2d_bwd_data(dy2, w2, x2.shape, **kw)
    out[f"sum{3 * y2.shape[2] * y2.shape[3]}/conv_grouped_bwd_weight"] = ops.conv2d_bwd_weight(dy2, x2, w2.shape, **kw)

    # Max-pool with ties (integer values), so the first-maximum rule decides the indices.
    xp = rng.integers(-3, 4, (2, 5, 9, 10)).astype(np.float32)
    yp, ip = ops.maxpool2d_fwd(xp, 3, stride=2, padding=1, ceil_mode=True)
    out["exact/maxpool_y"], out["exact/maxpool_idx"] = yp, ip
    out["exact/maxpool_dx"] = ops.maxpool2d_bwd(f32(*yp.shape), ip, xp.shape)
    # Dropout: the Philox mask, the scaled output and the backward.
    xd = f32(3, 7, 5, 11)
    yd, md = ops.dropout_fwd(xd, 0.3, seed=99, offset=5)
    out["exact/dropout_y"], out["exact/dropout_mask"] = yd, md
    out["exact/dropout_dx"] = ops.dropout_bwd(f32(*xd.shape), md, 0.3)
    # ReLU forward and backward (the sign of zero included).
    xr = f32(4, 3, 17, 19)
    xr[0, 0, 0, :4] = [0.0, -0.0, 1e-38, -1e-38]
    yr = ops.relu_fwd(xr)
    out["exact/relu_y"] = yr
    out["exact/relu_dx"] = ops.relu_bwd(f32(*xr.shape), yr)
    # Batch norm's statistics and backward reduce over N*H*W.
    xb = f32(4, 6, 9, 9)
    mean, var = ops.batchnorm_stats(xb)
    out["sum324/bn_mean"], out["sum324/bn_var"] = mean, var
    invstd = (1.0 / np.sqrt(var + 1e-5)).astype(np.float32)
    dx, sdy, dot = ops.batchnorm_bwd(f32(*xb.shape), xb, mean.astype(np.float32), invstd, f32(6), train=True)
    out["sum324/bn_dx"], out["sum324/bn_sum_dy"], out["sum324/bn_dotp"] = dx, sdy, dot
    # The augmentation pipeline: crop with padding, flip, colour jitter.
    xa = rng.uniform(0, 1, (5, 3, 16, 16)).astype(np.float32)
    aug = T.Compose([T.RandomCrop(12, padding=2), T.RandomHorizontalFlip(), T.ColorJitter(0.3, 0.3, 0.3)])
    out["exact/augment"] = aug(xa, epoch=2, seed=7)

    # A short training run through layers, a loss and Adam (conv 3x3 on Winograd's shape, BN, ReLU, pool,
    # dropout, a strided 1x1 conv, Linear).
    ck.manual_seed(5)
    model = ck.Sequential(ck.Conv2d(3, 8, 3, padding=1, bias=False), ck.BatchNorm2d(8), ck.ReLU(), ck.MaxPool2d(2),
                          ck.Dropout(0.2), ck.Conv2d(8, 12, 1, stride=2), ck.ReLU(), ck.Flatten(),
                          ck.Linear(12 * 4 * 4, 10))
    opt = ck.optim.Adam(model.parameters(), lr=1e-2)
    xs = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    ys = rng.integers(0, 10, 16)
    losses = []
    model.train()
    for _ in range(3):
        scores = model.forward(xs)
        loss, dscores = ck.losses.softmax_cross_entropy(scores, ys)
        model.zero_grad()
        model.backward(dscores)
        opt.step()
        losses.append(loss)
    out["step/losses"] = np.array(losses, np.float64)
    for name, p in model.named_parameters():
        out[f"step/{name}"] = p.data.copy()
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **battery())
