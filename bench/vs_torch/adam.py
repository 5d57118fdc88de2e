"""The fused Adam step over ResNet-18's parameter shapes, on the GPU."""
import math

import numpy as np
import torch

from .timing import Skipped, _close


def adam_cases_cuda(cases, rng):
    """The fused Adam step over ResNet-18's parameter shapes (cases.json, 62 tensors, 11.7M float32 values):
    cnnkit's optimizer on CuPy parameters vs torch.optim.Adam(fused=True) on CUDA, and cnnkit's adam_step
    kernel alone on one flat buffer. Work = 28 bytes per parameter (read p, g, m, v; write p, m, v)."""
    import cupy
    import cnnkit as ck
    from cnnkit.ops import _cuda as _cuda_ops
    shapes = [tuple(s) for s in cases["optimizer_param_shapes_resnet18"]]
    n = sum(math.prod(s) for s in shapes)
    nbytes = cases["optimizer_bytes_per_element"]["Adam"] * n
    label = f"resnet18 {len(shapes)} tensors, {n / 1e6:.1f}M"
    values = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.05) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-3) for s in shapes]
    tparams = [torch.nn.Parameter(torch.as_tensor(v, device="cuda")) for v in values]
    for p, g in zip(tparams, grads):
        p.grad = torch.as_tensor(g, device="cuda")
    opt_t = torch.optim.Adam(tparams, lr=1e-3, fused=True)

    def th_step():
        opt_t.step()

    # the kernel alone: one flat buffer, the scalars of step 1 (as the optimizer computes them on the host)
    flat = [cupy.asarray(np.concatenate([a.ravel() for a in values])),
            cupy.asarray(np.concatenate([a.ravel() for a in grads]))]
    m, v = cupy.zeros(n, cupy.float32), cupy.zeros(n, cupy.float32)
    b1, b2, lr = 0.9, 0.999, 1e-3

    def ck_kernel():
        _cuda_ops.adam_step(flat[0], flat[1], m, v, None, b1, b2, 1e-8, -lr / (1 - b1), math.sqrt(1 - b2), 1.0,
                            1.0, math.inf, 0.0, 0.0)

    def check_kernel():  # one step from zero moments: p - lr * g / (|g| + eps) elementwise, as torch computes
        p0 = flat[0].copy()
        m.fill(0)
        v.fill(0)
        ck_kernel()
        g = flat[1]
        want = p0 - lr * g / (cupy.abs(g) + 1e-8)
        return _close(cupy.asnumpy(flat[0]), cupy.asnumpy(want), 1e-5)

    yield label, "adam_step kernel", ("GB/s", nbytes), ck_kernel, th_step, check_kernel

    # cnnkit's optimizer on CuPy parameters (its step runs the CUDA kernels; a failure is reported, not raised)
    params = [ck.Parameter(cupy.asarray(a)) for a in values]
    for p, g in zip(params, grads):
        p.grad[...] = cupy.asarray(g)
    try:
        opt_c = ck.optim.Adam(params, lr=1e-3)
        opt_c.step()
    except Exception as e:
        raise Skipped(f"the optimizer row: ck.optim.Adam on CuPy parameters failed: {type(e).__name__}: {e}") from e

    def ck_step():
        opt_c.step()

    yield label, "optimizer", ("GB/s", nbytes), ck_step, th_step, None
