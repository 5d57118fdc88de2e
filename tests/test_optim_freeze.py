"""Freezing a parameter after the optimizer was built: requires_grad=False skips it in every step, as torch
skips a parameter whose grad is None; unfreezing resumes it with its own step count."""
import pickle

import numpy as np
import pytest

import cnnkit as ck

torch = pytest.importorskip("torch")

SHAPES = [(4, 3), (3,), (2, 5), (5,)]
FROZEN = 1          # the index of the parameter frozen for steps 3..5 (of 8)
FREEZE, THAW, STEPS = 2, 5, 8

CASES = [
    ("SGD", ck.optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.05)),
    ("SGD-damp", ck.optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("SGD-nesterov", ck.optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", ck.optim.Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.05)),
    ("Adam-amsgrad", ck.optim.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
    ("AdamW", ck.optim.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    ("RMSprop", ck.optim.RMSprop, torch.optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True,
                                                           weight_decay=0.05)),
    ("Adagrad", ck.optim.Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.05)),
]


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    return init, grads


def _set_grads(ps, grads, k, frozen):
    for i, (p, g) in enumerate(zip(ps, grads[k])):
        # a frozen parameter's gradient is not read: garbage there must change nothing (nor the norm)
        p.grad[...] = 1e3 if i in frozen else g


def _torch_step(opt, tps, grads, k, frozen, clip=None):
    for i, (p, g) in enumerate(zip(tps, grads[k])):
        p.grad = None if i in frozen else torch.tensor(g)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_([p for p in tps if p.grad is not None], clip)
    opt.step()


def _frozen_at(k, lo=FREEZE, hi=THAW):
    return {FROZEN} if lo <= k < hi else set()


def _set_frozen(ps, tps, frozen):
    for i, (p, tp) in enumerate(zip(ps, tps)):
        p.requires_grad = i not in frozen
        tp.requires_grad_(i not in frozen)


@pytest.mark.parametrize("name,cls,tcls,kw", CASES, ids=[c[0] for c in CASES])
def test_frozen_after_building_is_skipped_and_resumes_as_torch(name, cls, tcls, kw):
    init, grads = _problem()
    ps = [ck.Parameter(a.copy()) for a in init]
    tps = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    opt, topt = cls(ps, **kw), tcls(tps, **kw)
    for k in range(STEPS):
        frozen = _frozen_at(k)
        _set_frozen(ps, tps, frozen)
        before = ps[FROZEN].data.copy()
        _set_grads(ps, grads, k, frozen)
        opt.step()
        _torch_step(topt, tps, grads, k, frozen)
        for i, (p, tp) in enumerate(zip(ps, tps)):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=0, atol=1e-12,
                                       err_msg=f"{name}: step {k}, parameter {i}")
        if frozen:
            np.testing.assert_array_equal(ps[FROZEN].data, before)


@pytest.mark.parametrize("name,cls,tcls,kw", CASES, ids=[c[0] for c in CASES])
def test_frozen_parameter_state_does_not_move(name, cls, tcls, kw):
    init, grads = _problem(1)
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = cls(ps, **kw)
    off = opt._flats[0].offsets[FROZEN]
    sl = slice(off, off + ps[FROZEN].size)
    _set_grads(ps, grads, 0, set())
    opt.step()
    ps[FROZEN].requires_grad = False
    state = {k: v[sl].copy() for k, v in opt.state[0].items() if isinstance(v, np.ndarray)}
    assert state   # every case keeps per-element state
    for k in range(1, 4):
        _set_grads(ps, grads, k, {FROZEN})
        opt.step()
    for key, v in state.items():
        np.testing.assert_array_equal(opt.state[0][key][sl], v, err_msg=f"{name}: state {key}")


def _steps_equal_torch(ps, tps, opt, topt, grads, frozen_at, clip=None):
    """STEPS steps of both optimizers with the parameters frozen_at(k) frozen at step k; values equal."""
    for k in range(STEPS):
        frozen = frozen_at(k)
        _set_frozen(ps, tps, frozen)
        _set_grads(ps, grads, k, frozen)
        opt.step()
        _torch_step(topt, tps, grads, k, frozen, clip=clip)
        for p, tp in zip(ps, tps):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=0, atol=1e-12)


def test_all_frozen_group_moves_nothing_and_other_groups_step():
    init, grads = _problem(2)
    ps = [ck.Parameter(a.copy()) for a in init]
    tps = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    opt = ck.optim.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.05}], lr=0.01)
    topt = torch.optim.Adam([{"params": tps[:2]}, {"params": tps[2:], "lr": 0.05}], lr=0.01)
    _steps_equal_torch(ps, tps, opt, topt, grads, lambda k: {0, 1} if 1 <= k < 4 else set())


def test_frozen_from_the_first_step_starts_its_momentum_as_torch():
    # frozen before any step: torch creates its momentum buffer (buf = grad) at its first step after unfreezing
    init, grads = _problem(3)
    ps = [ck.Parameter(a.copy()) for a in init]
    tps = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    kw = dict(lr=0.1, momentum=0.9, dampening=0.5)
    opt, topt = ck.optim.SGD(ps, **kw), torch.optim.SGD(tps, **kw)
    _steps_equal_torch(ps, tps, opt, topt, grads, lambda k: _frozen_at(k, 0, 3))


def test_clip_grad_norm_leaves_a_frozen_gradient_out_as_torch():
    init, grads = _problem(4)
    ps = [ck.Parameter(a.copy()) for a in init]
    tps = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    opt = ck.optim.SGD(ps, lr=0.1, momentum=0.9, clip_grad_norm=0.5)
    topt = torch.optim.SGD(tps, lr=0.1, momentum=0.9)
    _steps_equal_torch(ps, tps, opt, topt, grads, _frozen_at, clip=0.5)


@pytest.mark.parametrize("name,cls,tcls,kw", [c for c in CASES if c[0] in ("SGD", "Adam", "Adagrad")],
                         ids=["SGD", "Adam", "Adagrad"])
def test_state_dict_round_trip_while_frozen_resumes_bit_exact(name, cls, tcls, kw):
    init, grads = _problem(5)
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = cls(ps, **kw)
    for k in range(STEPS):           # the uninterrupted run
        ps[FROZEN].requires_grad = not _frozen_at(k)
        _set_grads(ps, grads, k, _frozen_at(k))
        opt.step()
    qs = [ck.Parameter(a.copy()) for a in init]
    o1 = cls(qs, **kw)
    for k in range(FREEZE + 2):      # stop in the middle of the frozen stretch
        qs[FROZEN].requires_grad = not _frozen_at(k)
        _set_grads(qs, grads, k, _frozen_at(k))
        o1.step()
    sd = pickle.loads(pickle.dumps(o1.state_dict()))   # as a checkpoint file holds it
    rs = [ck.Parameter(q.data.copy()) for q in qs]
    o2 = cls(rs, **kw)   # built over every parameter (one frozen when building is left out), then frozen
    o2.load_state_dict(sd)
    for k in range(FREEZE + 2, STEPS):
        rs[FROZEN].requires_grad = not _frozen_at(k)
        _set_grads(rs, grads, k, _frozen_at(k))
        o2.step()
    for p, r in zip(ps, rs):
        np.testing.assert_array_equal(p.data, r.data)


# ---------------------------------------------------------------- the device step (on the CuPy stand-in)

@pytest.mark.parametrize("name,cls,tcls,kw", CASES, ids=[c[0] for c in CASES])
def test_device_step_skips_a_frozen_parameter_without_host_reads(monkeypatch, name, cls, tcls, kw):
    from helpers import fakecupy
    cp = fakecupy.install(monkeypatch)
    init, grads = _problem(6)
    ps = [ck.Parameter(cp.asarray(a.copy())) for a in init]
    tps = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    opt, topt = cls(ps, **kw), tcls(tps, **kw)
    # on a GPU an unfrozen parameter resumes with its group's step count: Adam and AdaGrad then differ from
    # torch's per-parameter count, so they are compared up to the unfreezing
    steps = STEPS if name.startswith(("SGD", "RMSprop")) else THAW
    for k in range(steps):
        frozen = _frozen_at(k)
        _set_frozen(ps, tps, frozen)
        before = ps[FROZEN].data.get()
        state = {n: v.get() for n, v in opt.state[0].items() if isinstance(v, fakecupy.ndarray)}
        for i, (p, g) in enumerate(zip(ps, grads[k])):
            p.grad[...] = cp.asarray(np.full(g.shape, 1e3) if i in frozen else g)
        with fakecupy.counting() as c:
            opt.step()
        assert c.syncs == [] and c.h2d == [], f"host traffic inside step {k}: {c.syncs} {c.h2d}"
        _torch_step(topt, tps, grads, k, frozen)
        for i, (p, tp) in enumerate(zip(ps, tps)):
            np.testing.assert_allclose(p.data.get(), tp.detach().numpy(), rtol=0, atol=1e-12,
                                       err_msg=f"{name}: step {k}, parameter {i}")
        if frozen:
            np.testing.assert_array_equal(ps[FROZEN].data.get(), before)
            off = opt._flats[0].offsets[FROZEN]
            for n, v in state.items():
                np.testing.assert_array_equal(opt.state[0][n].get()[off:off + ps[FROZEN].size],
                                              v[off:off + ps[FROZEN].size], err_msg=f"{name}: state {n}")


def test_checkpoint_encoding_round_trip_while_frozen_and_bad_frozen_steps():
    import json
    from cnnkit.train import checkpoint as ckpt
    init, grads = _problem(7)
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = ck.optim.Adam(ps, lr=0.01)
    for k in range(FREEZE + 2):
        ps[FROZEN].requires_grad = not _frozen_at(k)
        _set_grads(ps, grads, k, _frozen_at(k))
        opt.step()
    tensors = {}
    doc = json.loads(json.dumps(ckpt.split_arrays(opt.state_dict(), "optimizer", tensors)))   # as the trainer writes
    sd = ckpt.join_arrays(doc, tensors)
    assert sd["state"][0]["frozen_steps"] == [0, 2, 0, 0] and sd["state"][0]["step"] == FREEZE + 2
    rs = [ck.Parameter(p.data.copy()) for p in ps]
    o2 = ck.optim.Adam(rs, lr=0.01)
    o2.load_state_dict(sd)
    for k in range(FREEZE + 2, STEPS):
        for q in (ps, rs):
            q[FROZEN].requires_grad = not _frozen_at(k)
            _set_grads(q, grads, k, _frozen_at(k))
        opt.step()
        o2.step()
    for p, r in zip(ps, rs):
        np.testing.assert_array_equal(p.data, r.data)
    for bad in ([0, 2, 0], [0, "2", 0, 0], [0, 99, 0, 0], [0, -1, 0, 0], 5):
        sd["state"][0]["frozen_steps"] = bad
        with pytest.raises(ValueError, match="frozen_steps of group 0"):
            ck.optim.Adam([ck.Parameter(a.copy()) for a in init], lr=0.01).load_state_dict(sd)
