"""ck.optim's first-order rules against torch.optim step for step (float64 rtol 1e-10, float32 close):
lr changes, param groups, decay_bias, frozen parameters, zero_grad."""
import numpy as np
import pytest

import cnnkit as ck
from helpers.optim_helpers import assert_match, CASES, classes, problem, run_both, set_grads, SHAPES, STEPS, TORCH

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_torch_with_lr_change(name, kw, dtype):
    ps, tps, _ = run_both(*classes(name), kw, dtype, lr_change=(50, 0.3))
    assert_match(ps, tps, dtype)


@pytest.mark.parametrize("name", list(TORCH))
def test_param_groups_own_lr_and_weight_decay(name):
    kw = dict(lr=0.01) if name != "SGD" else dict(lr=0.05, momentum=0.9)
    groups = [([0, 1], dict(lr=0.002, weight_decay=0.05)), ([2, 3, 4], dict(weight_decay=0.0))]
    ps, tps, opt = run_both(*classes(name), kw, np.float64, groups=groups)
    assert_match(ps, tps, np.float64)
    assert len(opt.param_groups) == 2 and opt.param_groups[0]["lr"] == 0.002


@pytest.mark.parametrize("name", list(TORCH))
def test_decay_bias_false_equals_torch_groups_without_bias_decay(name):
    kw = dict(lr=0.05, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    wd = 0.1
    init, grads = problem(np.float64)
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = getattr(ck.optim, name)(ps, weight_decay=wd, decay_bias=False, **kw)
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    t_cls = classes(name)[1]
    topt = t_cls([dict(params=[t for t in tp if t.ndim > 1], weight_decay=wd),
                  dict(params=[t for t in tp if t.ndim <= 1], weight_decay=0.0)], **kw)
    for k in range(STEPS):
        opt.zero_grad()
        set_grads(ps, grads[k])
        opt.step()
        for t, g in zip(tp, grads[k]):
            t.grad = torch.tensor(g)
        topt.step()
    assert_match(ps, [t.detach().numpy() for t in tp], np.float64)


def test_frozen_params_are_skipped():
    init, grads = problem(np.float64, steps=5)
    ps = [ck.Parameter(a.copy()) for a in init]
    ps[1].requires_grad = False
    frozen = ps[1].data.copy()
    opt = ck.optim.Adam(ps, lr=0.1)
    for k in range(5):
        opt.zero_grad()
        set_grads(ps, grads[k])
        opt.step()
    np.testing.assert_array_equal(ps[1].data, frozen)
    assert not np.array_equal(ps[0].data, init[0])
    assert opt._flats[0].size == sum(p.size for p in ps) - ps[1].size


def test_zero_grad_is_one_fill_over_the_flat_buffer():
    ps = [ck.Parameter(np.ones(s)) for s in SHAPES]
    opt = ck.optim.SGD(ps, lr=0.1)
    for p in ps:
        p.grad += 3.0
    assert np.all(opt._flats[0].grad == 3.0)  # p.grad are views into the flat buffer
    opt.zero_grad()
    assert all(np.all(p.grad == 0) for p in ps)
