"""Shared builders for the optimizer tests: a random problem, a step-for-step run of ck.optim and torch.optim,
the cases compared, and one configured instance of each optimizer."""
import itertools

import numpy as np
import pytest

import cnnkit as ck

torch = pytest.importorskip("torch")

SHAPES = [(6, 3, 3, 3), (6,), (10, 7), (10,), (3, 1, 2, 2)]
STEPS = 100
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


def problem(dtype, seed=0, steps=STEPS, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return init, grads


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad[...] = g


def run_both(ck_cls, t_cls, kw, dtype, groups=None, lr_change=None, steps=STEPS, ck_kw=None, torch_hook=None,
             seed=0):
    """Run cnnkit and torch on the same random problem; return (ck params, torch params).

    groups: list of (indices, extra hyperparameters); lr_change: (step, factor) applied to every group."""
    init, grads = problem(dtype, seed, steps)
    ps = [ck.Parameter(a.copy()) for a in init]
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    if groups is None:
        opt = ck_cls(ps, **kw, **(ck_kw or {}))
        topt = t_cls(tp, **kw)
    else:
        opt = ck_cls([dict(params=[ps[i] for i in idx], **extra) for idx, extra in groups], **kw, **(ck_kw or {}))
        topt = t_cls([dict(params=[tp[i] for i in idx], **extra) for idx, extra in groups], **kw)
    for k in range(steps):
        if lr_change and k == lr_change[0]:
            for g in opt.param_groups:
                g["lr"] *= lr_change[1]
            for g in topt.param_groups:
                g["lr"] *= lr_change[1]
        opt.zero_grad()
        set_grads(ps, grads[k])
        opt.step()
        for t, g in zip(tp, grads[k]):
            t.grad = torch.tensor(g)
        if torch_hook:
            torch_hook(tp)
        topt.step()
    return ps, [t.detach().numpy() for t in tp], opt


def assert_match(ps, tps, dtype):
    for p, t in zip(ps, tps):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, t, **TOL[dtype])


def sgd_cases():
    for mom, damp, nest, wd in itertools.product([0.0, 0.9], [0.0, 0.5], [False, True], [0.0, 0.01]):
        if nest and (mom == 0 or damp != 0):
            continue
        yield dict(lr=0.05, momentum=mom, dampening=damp, nesterov=nest, weight_decay=wd)


CASES = (
    [("SGD", kw) for kw in sgd_cases()]
    + [("AdaGrad", dict(lr=0.1, lr_decay=d, initial_accumulator_value=a, weight_decay=wd, eps=1e-10))
       for d, a, wd in itertools.product([0.0, 0.05], [0.0, 0.1], [0.0, 0.01])]
    + [("RMSProp", dict(lr=0.01, alpha=al, centered=c, momentum=m, weight_decay=wd))
       for c, m, wd, al in itertools.product([False, True], [0.0, 0.9], [0.0, 0.01], [0.99, 0.3])]
    + [("Adam", dict(lr=0.01, betas=b, amsgrad=a, weight_decay=wd))
       for a, wd, b in itertools.product([False, True], [0.0, 0.01], [(0.9, 0.999), (0.3, 0.9)])]
    + [("AdamW", dict(lr=0.01, betas=b, amsgrad=a, weight_decay=wd))
       for a, wd, b in itertools.product([False, True], [0.0, 0.1], [(0.9, 0.999), (0.6, 0.9)])]
)
CASES += [(n, dict(kw, maximize=True)) for n, kw in [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("AdaGrad", dict(lr=0.1, weight_decay=0.01)), ("RMSProp", dict(lr=0.01, centered=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)), ("AdamW", dict(lr=0.01, weight_decay=0.1))]]
TORCH = {"SGD": "SGD", "AdaGrad": "Adagrad", "RMSProp": "RMSprop", "Adam": "Adam", "AdamW": "AdamW"}


def classes(name):
    return getattr(ck.optim, name), getattr(torch.optim, TORCH[name])


def _all_opts():
    return [(ck.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
            (ck.optim.AdaGrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
            (ck.optim.RMSProp, dict(lr=0.01, centered=True, momentum=0.5)),
            (ck.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
            (ck.optim.AdamW, dict(lr=0.01, decay_bias=False))]


def _bits(arrays):
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


def _ps():
    return [ck.Parameter(np.ones((3, 2), dtype=np.float32))]
