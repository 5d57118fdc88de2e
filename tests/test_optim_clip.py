"""L1, gradient clipping (fused and standalone) and the max-norm constraint, against torch."""
import numpy as np
import pytest

import cnnkit as ck
from helpers.optim_helpers import assert_match, classes, problem, run_both, set_grads

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------- L1, clipping, max-norm

@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSProp", "AdaGrad"])
def test_l1_elastic_net_gradient_added_in_the_fused_pass(name):
    l1, wd = 0.02, 0.01
    kw = dict(lr=0.05, momentum=0.9, weight_decay=wd) if name == "SGD" else dict(lr=0.01, weight_decay=wd)

    def hook(tp):  # the reference: torch with g += l1 * sign(p) before its step
        for t in tp:
            t.grad += l1 * torch.sign(t.detach())

    ps, tps, _ = run_both(*classes(name), kw, np.float64, ck_kw=dict(l1=l1), torch_hook=hook)
    assert_match(ps, tps, np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_fused_clip_grad_norm_matches_torch_clip_then_step(dtype):
    max_norm = 3.0

    def hook(tp):
        torch.nn.utils.clip_grad_norm_(tp, max_norm)

    ps, tps, opt = run_both(ck.optim.Adam, torch.optim.Adam, dict(lr=0.01), dtype,
                            ck_kw=dict(clip_grad_norm=max_norm), torch_hook=hook)
    assert_match(ps, tps, dtype)
    assert opt.last_grad_norm > max_norm  # the gradients here are large enough that clipping acted


def test_fused_clip_grad_value_matches_torch():
    def hook(tp):
        torch.nn.utils.clip_grad_value_(tp, 0.5)

    ps, tps, _ = run_both(ck.optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9), np.float64,
                          ck_kw=dict(clip_grad_value=0.5), torch_hook=hook)
    assert_match(ps, tps, np.float64)


def test_standalone_clipping_in_place():
    init, grads = problem(np.float64, steps=1)
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = ck.optim.SGD(ps, lr=0.1)
    set_grads(ps, grads[0])
    tp = [torch.tensor(g) for g in grads[0]]
    for t in tp:
        t.grad = t.clone()
    want = torch.nn.utils.clip_grad_norm_(tp, 1.5).item()
    got = ck.optim.clip_grad_norm_(opt, 1.5)
    assert got == pytest.approx(want, rel=1e-12)
    for p, t in zip(ps, tp):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)
    ck.optim.clip_grad_value_(ps, 0.01)
    assert max(np.abs(p.grad).max() for p in ps) <= 0.01


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_max_norm_projects_each_unit_after_the_step(dtype):
    c = 0.5

    init, grads = problem(dtype, steps=20)
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = ck.optim.SGD(ps, lr=0.1, momentum=0.9, max_norm=c)
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = torch.optim.SGD(tp, lr=0.1, momentum=0.9)
    for k in range(20):
        opt.zero_grad()
        set_grads(ps, grads[k])
        opt.step()
        for t, g in zip(tp, grads[k]):
            t.grad = torch.tensor(g)
        topt.step()
        with torch.no_grad():
            for t in tp:
                if t.ndim > 1:
                    t.copy_(torch.renorm(t, 2, 0, c))
    assert_match(ps, [t.detach().numpy() for t in tp], dtype)
    for p in ps:
        if p.data.ndim > 1:
            assert np.linalg.norm(p.data.reshape(len(p.data), -1), axis=1).max() <= c * (1 + 1e-5)
