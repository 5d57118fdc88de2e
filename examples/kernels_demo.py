"""A tiny ConvNet written directly on cnnkit.ops (no layers, no trainer): the kernels end to end.

The task is synthetic but real learning: 16x16 images holding horizontal or vertical bars under noise.
The net is conv3x3(1->8) -> ReLU -> maxpool 2x2 -> dropout -> conv3x3(8->8) -> ReLU -> maxpool 2x2 ->
linear(128->2), trained with plain SGD and softmax cross-entropy. It prints the loss falling and the
held-out accuracy, then the throughput of each kernel on a CIFAR-sized batch.
"""
import time

import numpy as np

import cnnkit as ck
from cnnkit import ops


def make_bars(n, rng):
    """n images (n, 1, 16, 16) of 2 to 4 bars, horizontal (label 0) or vertical (label 1), plus noise."""
    x = rng.normal(0.0, 0.3, size=(n, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    for i in range(n):
        for pos in rng.choice(16, size=rng.integers(2, 5), replace=False):
            if y[i] == 0:
                x[i, 0, pos, :] += 1.0
            else:
                x[i, 0, :, pos] += 1.0
    return x, y


def softmax_xent(scores, labels):
    shifted = scores - scores.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = scores.shape[0]
    loss = -logp[np.arange(n), labels].mean()
    dscores = np.exp(logp)
    dscores[np.arange(n), labels] -= 1.0
    return float(loss), (dscores / n).astype(scores.dtype)


def forward(params, x, train, seed, step):
    w1, b1, w2, b2, w3, b3 = params
    c1 = ops.conv2d_fwd(x, w1, b1, padding=1)
    r1 = ops.relu_fwd(c1)
    p1, i1 = ops.maxpool2d_fwd(r1, 2)
    if train:
        d1, m1 = ops.dropout_fwd(p1, 0.25, seed=seed, offset=step)
    else:
        d1, m1 = p1, None
    c2 = ops.conv2d_fwd(d1, w2, b2, padding=1)
    r2 = ops.relu_fwd(c2)
    p2, i2 = ops.maxpool2d_fwd(r2, 2)
    flat = p2.reshape(p2.shape[0], -1)
    scores = ops.matmul(flat, w3) + b3
    return scores, (x, r1, i1, p1, m1, d1, r2, i2, p2, flat)


def backward(params, cache, dscores):
    w1, b1, w2, b2, w3, b3 = params
    x, r1, i1, p1, m1, d1, r2, i2, p2, flat = cache
    dw3 = ops.matmul(flat, dscores, trans_a=True)
    db3 = dscores.sum(axis=0)
    dp2 = ops.matmul(dscores, w3, trans_b=True).reshape(p2.shape)
    dr2 = ops.maxpool2d_bwd(dp2, i2, r2.shape)
    dc2 = ops.relu_bwd(dr2, r2)
    dw2 = ops.conv2d_bwd_weight(dc2, d1, w2.shape, padding=1)
    db2 = ops.conv2d_bwd_bias(dc2)
    dd1 = ops.conv2d_bwd_data(dc2, w2, d1.shape, padding=1)
    dp1 = ops.dropout_bwd(dd1, m1, 0.25)
    dr1 = ops.maxpool2d_bwd(dp1, i1, r1.shape)
    dc1 = ops.relu_bwd(dr1, r1)
    # The first layer's input gradient is never needed, so conv2d_bwd_data is not called for it.
    dw1 = ops.conv2d_bwd_weight(dc1, x, w1.shape, padding=1)
    db1 = ops.conv2d_bwd_bias(dc1)
    return [dw1, db1, dw2, db2, dw3, db3]


def he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def train(steps=150, batch=64, lr=0.05, seed=0, log=print):
    rng = np.random.default_rng(seed)
    xtr, ytr = make_bars(2048, rng)
    xte, yte = make_bars(512, rng)
    params = [he(rng, (8, 1, 3, 3), 9), np.zeros(8, np.float32), he(rng, (8, 8, 3, 3), 72),
              np.zeros(8, np.float32), he(rng, (128, 2), 128), np.zeros(2, np.float32)]
    losses = []
    for step in range(steps):
        idx = rng.integers(0, len(xtr), size=batch)
        scores, cache = forward(params, xtr[idx], True, seed, step)
        loss, dscores = softmax_xent(scores, ytr[idx])
        grads = backward(params, cache, dscores)
        for p, g in zip(params, grads):
            p -= lr * g
        losses.append(loss)
        if step % 25 == 0 or step == steps - 1:
            log(f"step {step:4d}  loss {loss:.4f}")
    scores, _ = forward(params, xte, False, seed, 0)
    acc = float((scores.argmax(axis=1) == yte).mean())
    log(f"held-out accuracy {acc:.3f} (chance 0.5); loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}")
    return losses, acc


def kernel_throughput(log=print):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((128, 32, 32, 32), dtype=np.float32)
    w = rng.standard_normal((32, 32, 3, 3), dtype=np.float32)

    def clock(fn, reps=5):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps

    flops = 2 * 128 * 32 * 32 * 32 * 32 * 9
    t = clock(lambda: ops.conv2d_fwd(x, w, padding=1))
    log(f"conv2d_fwd 128x32x32x32, 3x3x32: {t * 1e3:7.2f} ms  {flops / t / 1e9:6.1f} GFLOP/s")
    t = clock(lambda: ops.maxpool2d_fwd(x, 2))
    log(f"maxpool2d_fwd 2x2 with indices:  {t * 1e3:7.2f} ms  {(x.nbytes * 1.75) / t / 1e9:6.1f} GB/s")
    t = clock(lambda: ops.dropout_fwd(x, 0.5, seed=3))
    log(f"dropout_fwd p=0.5:               {t * 1e3:7.2f} ms  {(x.size * 9) / t / 1e9:6.1f} GB/s")


def main():
    info = ck.build_info()
    print(f"cnnkit {info['version']}  threads={info['num_threads']}  simd={info['simd']}  "
          f"cuda={'built' if info['cuda'] else 'not built'} ({ck.cuda.status()})")
    _, acc = train()
    kernel_throughput()
    if acc < 0.9:
        raise SystemExit(f"demo: the net did not learn (accuracy {acc:.3f})")


if __name__ == "__main__":
    main()
