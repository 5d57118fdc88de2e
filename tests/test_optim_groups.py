"""Param groups: a parameter listed twice in one group, or in two groups, against torch.optim's rules."""
import warnings

import numpy as np
import pytest

import cnnkit as ck

torch = pytest.importorskip("torch")

SHAPES = [(4, 3), (4,), (2, 3, 2)]
STEPS = 8
OPTS = [("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3)), ("Adam", dict(lr=0.01, weight_decay=1e-3))]


def _init(seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    return init, grads


@pytest.mark.parametrize("name,kw", OPTS)
def test_duplicate_parameter_in_a_group_warns_is_kept_once_and_trains_as_torch(name, kw):
    init, grads = _init()
    ps = [ck.Parameter(a.copy()) for a in init]
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = getattr(ck.optim, name)([ps[0], ps[1], ps[0], ps[2], ps[1]], clip_grad_norm=3.0, **kw)
    assert len(opt.param_groups[0]["params"]) == 3
    assert all(a is b for a, b in zip(opt.param_groups[0]["params"], ps))
    # torch keeps the duplicates in its list (and would apply the update twice); the reference is the
    # parameter listed once, which is what deduplication gives
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = getattr(torch.optim, name)(tp, **kw)
    for k in range(STEPS):
        opt.zero_grad()
        for p, g in zip(ps, grads[k]):
            p.grad[...] = g
        opt.step()
        for t, g in zip(tp, grads[k]):
            t.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_(tp, 3.0)
        topt.step()
        for p, t in zip(ps, tp):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-12)
    want = np.sqrt(sum(float((g ** 2).sum()) for g in grads[-1]))
    np.testing.assert_allclose(opt.last_grad_norm, want, rtol=1e-12)
    sd = opt.state_dict()
    n = sum(p.size for p in ps)
    assert sd["param_groups"][0]["params"] == [0, 1, 2]
    for k, v in sd["state"][0].items():
        if isinstance(v, np.ndarray):
            assert v.size == n, k


def test_duplicate_in_add_param_group_warns_and_is_deduplicated():
    a, b = ck.Parameter(np.ones(3)), ck.Parameter(np.ones((2, 2)))
    opt = ck.optim.SGD([a], lr=0.1, momentum=0.9)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt.add_param_group({"params": [b, b], "lr": 0.2})
    assert len(opt.param_groups[1]["params"]) == 1
    b.grad[...] = 1.0
    opt.step()
    np.testing.assert_allclose(b.data, np.full((2, 2), 1.0 - 0.2))


def test_no_warning_without_duplicates():
    ps = [ck.Parameter(np.ones(3)), ck.Parameter(np.ones(2))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ck.optim.Adam([{"params": ps[:1]}, {"params": ps[1:]}])


@pytest.mark.parametrize("name,kw", OPTS)
def test_parameter_in_two_groups_raises_as_torch(name, kw):
    init, _ = _init()
    ps = [ck.Parameter(a.copy()) for a in init]
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    cls, tcls = getattr(ck.optim, name), getattr(torch.optim, name)
    msg = "some parameters appear in more than one parameter group"
    with pytest.raises(ValueError, match=msg):
        tcls([{"params": tp[:2]}, {"params": tp[1:]}], **kw)
    with pytest.raises(ValueError, match=msg):
        cls([{"params": ps[:2]}, {"params": ps[1:]}], **kw)

    opt = cls([{"params": ps[:2]}], **kw)
    topt = tcls([{"params": tp[:2]}], **kw)
    with pytest.raises(ValueError, match=msg):
        topt.add_param_group({"params": [tp[2], tp[0]]})
    with pytest.raises(ValueError, match=msg):
        opt.add_param_group({"params": [ps[2], ps[0]]})
    # the refused group left nothing behind: ps[2] can still be added, ps[0] still trains in group 0
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [ps[2]]})
    before = ps[0].data.copy()
    for p in ps:
        p.grad[...] = 1.0
    opt.step()
    assert not np.array_equal(ps[0].data, before)
    assert ps[0].data.base is opt._flats[0].data


def test_duplicate_and_in_another_group_raises_not_just_warns():
    a, b = ck.Parameter(np.ones(3)), ck.Parameter(np.ones(2))
    opt = ck.optim.SGD([a], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="more than one parameter group"):
            opt.add_param_group({"params": [b, a, b]})


def test_lbfgs_duplicate_parameter_warns_and_trains_as_torch_with_it_listed_once():
    rng = np.random.default_rng(3)
    A, b = rng.standard_normal((6, 4)), rng.standard_normal(6)
    w0 = rng.standard_normal(4)
    w = ck.Parameter(w0.copy())
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = ck.optim.LBFGS([w, w], lr=0.5, max_iter=10)

    def closure():
        r = A @ w.data - b
        w.grad[...] = A.T @ r
        return 0.5 * float(r @ r)

    tw = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.LBFGS([tw], lr=0.5, max_iter=10)
    tA, tb = torch.tensor(A), torch.tensor(b)

    def tclosure():
        topt.zero_grad()
        loss = 0.5 * ((tA @ tw - tb) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
        topt.step(tclosure)
    np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert opt._flat.size == w.size
