"""ck.schedules against torch.optim.lr_scheduler driven side by side: param groups added mid-run, argument
checks that torch makes, and state dicts that carry every hyperparameter."""
import json
import math

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import schedules as S

torch = pytest.importorskip("torch")
lrs_mod = torch.optim.lr_scheduler


def _pair(lr=0.1, **kw):
    """A cnnkit and a torch SGD over one parameter each, same hyperparameters."""
    opt = ck.optim.SGD([ck.Parameter(np.zeros(2))], lr=lr, **kw)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=lr, **kw)
    return opt, topt


def _add_group(opt, topt, lr):
    opt.add_param_group({"params": [ck.Parameter(np.zeros(3))], "lr": lr})
    topt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "lr": lr})


def _lrs(opt):
    return [g["lr"] for g in opt.param_groups]


# ---------------------------------------------------------------- ReduceOnPlateau and add_param_group

def test_reduce_on_plateau_scalar_min_lr_extends_to_a_group_added_later():
    opt, topt = _pair()
    kw = dict(factor=0.5, patience=2, cooldown=1, min_lr=0.02)
    sched, tsched = S.ReduceOnPlateau(opt, **kw), lrs_mod.ReduceLROnPlateau(topt, **kw)
    for k in range(40):
        if k == 5:
            _add_group(opt, topt, 0.08)
        m = 1.0 if k < 3 else 2.0   # improves, then plateaus: a reduction every few epochs
        sched.step(m)
        tsched.step(m)
        assert _lrs(opt) == _lrs(topt), k
    assert _lrs(opt) == [0.02, 0.02]


def test_reduce_on_plateau_list_min_lr_of_the_wrong_length_raises_before_changing_an_lr():
    opt, topt = _pair()
    kw = dict(factor=0.5, patience=1, min_lr=[0.01])
    sched, tsched = S.ReduceOnPlateau(opt, **kw), lrs_mod.ReduceLROnPlateau(topt, **kw)
    sched.step(1.0)
    tsched.step(1.0)
    _add_group(opt, topt, 0.05)
    raised = 0
    for k in range(30):
        if k == 10:   # the user fixes min_lrs, as torch's error asks; both continue alike
            sched.min_lrs = [0.01, 0.001]
            tsched.min_lrs = [0.01, 0.001]
        before = _lrs(opt)
        try:
            tsched.step(2.0)
            t_err = False
        except RuntimeError:
            t_err = True
        if t_err:
            raised += 1
            with pytest.raises(ValueError, match=r"min_lr.*1 value.*2 param groups"):
                sched.step(2.0)
            assert _lrs(opt) == before
        else:
            sched.step(2.0)
        assert _lrs(opt) == _lrs(topt), k
    assert raised > 0 and _lrs(opt) == [0.01, 0.001]


def test_reduce_on_plateau_list_min_lr_checked_at_construction_as_torch():
    opt, topt = _pair()
    with pytest.raises(ValueError):
        lrs_mod.ReduceLROnPlateau(topt, min_lr=[0.1, 0.2])
    with pytest.raises(ValueError, match="min_lr must have one value per param group"):
        S.ReduceOnPlateau(opt, min_lr=[0.1, 0.2])


# ---------------------------------------------------------------- argument checks torch makes

def _run_lrs(sched, opt, n):
    """lrs of every group at t = 0 .. n-1 (read, then step, as a training loop does)."""
    out = []
    for _ in range(n):
        out.append(_lrs(opt))
        opt.step()
        sched.step()
    return out


def test_onecycle_needs_total_steps_or_epochs_and_steps_per_epoch_as_torch():
    opt, topt = _pair(momentum=0.9)
    for kw in ({}, {"epochs": 5}, {"steps_per_epoch": 40}):
        with pytest.raises(ValueError, match="total_steps"):
            lrs_mod.OneCycleLR(topt, max_lr=0.5, **kw)
        with pytest.raises(ValueError, match=r"total_steps.*epochs.*steps_per_epoch"):
            S.OneCycle(opt, max_lr=0.5, **kw)
    with pytest.raises(ValueError, match="total_steps"):
        S.OneCycle(None, 0.5)
    for kw in ({"epochs": 0, "steps_per_epoch": 40}, {"epochs": 5, "steps_per_epoch": 0}):
        with pytest.raises(ValueError):
            lrs_mod.OneCycleLR(topt, max_lr=0.5, **kw)
        with pytest.raises(ValueError, match="epochs|steps_per_epoch"):
            S.OneCycle(opt, max_lr=0.5, **kw)
    with pytest.raises(TypeError, match="epochs must be an int"):
        S.OneCycle(opt, max_lr=0.5, epochs=5.0, steps_per_epoch=40)
    with pytest.raises(ValueError, match="total_steps=100 but epochs \\* steps_per_epoch = 200"):
        S.OneCycle(opt, max_lr=0.5, total_steps=100, epochs=5, steps_per_epoch=40)


def test_onecycle_from_epochs_and_steps_per_epoch_equals_torch():
    opt, topt = _pair(momentum=0.9)
    sched = S.OneCycle(opt, max_lr=0.5, epochs=5, steps_per_epoch=40)
    tsched = lrs_mod.OneCycleLR(topt, max_lr=0.5, epochs=5, steps_per_epoch=40)
    assert sched.total_steps == 200
    assert _run_lrs(sched, opt, 200) == _run_lrs(tsched, topt, 200)


@pytest.mark.parametrize("start_factor", [0, 0.0, -0.1, 1.5])
def test_linear_warmup_start_factor_must_be_in_0_1_as_torch_linear_lr(start_factor):
    opt, topt = _pair()
    with pytest.raises(ValueError):
        lrs_mod.LinearLR(topt, start_factor=start_factor)
    with pytest.raises(ValueError, match=r"invalid start_factor .*must be > 0.0 and <= 1.0"):
        S.LinearWarmup(opt, S.Constant(), warmup_steps=5, start_factor=start_factor)


def test_linear_warmup_small_and_unit_start_factor_equal_torch_linear_lr():
    for f in (1e-6, 1.0):
        opt, topt = _pair()
        sched = S.LinearWarmup(opt, S.Constant(), warmup_steps=7, start_factor=f)
        tsched = lrs_mod.LinearLR(topt, start_factor=f, end_factor=1.0, total_iters=7)
        got, want = _run_lrs(sched, opt, 20), _run_lrs(tsched, topt, 20)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- state dicts carry every hyperparameter

# name: (cnnkit A, cnnkit B configured differently, torch A and torch B or None, exact). Each factory takes
# an optimizer; the torch pair mirrors the cnnkit pair so that torch's own load_state_dict is the reference
# (exact: torch computes the same closed form; otherwise it multiplies the previous lr, equal to rounding).
LOADS = {
    "constant": (lambda o: S.Constant(o), lambda o: S.Constant(o, base_lr=0.7), None, True),
    "step": (lambda o: S.Step(o, step_size=3, gamma=0.5), lambda o: S.Step(o, step_size=7, gamma=0.1),
             (lambda o: lrs_mod.StepLR(o, 3, 0.5), lambda o: lrs_mod.StepLR(o, 7, 0.1)), True),
    "multistep": (lambda o: S.MultiStep(o, [4, 9, 15], gamma=0.3), lambda o: S.MultiStep(o, [2], gamma=0.9),
                  (lambda o: lrs_mod.MultiStepLR(o, [4, 9, 15], 0.3), lambda o: lrs_mod.MultiStepLR(o, [2], 0.9)),
                  False),   # torch multiplies the previous lr at each milestone: equal to rounding
    "exponential": (lambda o: S.Exponential(o, 0.9), lambda o: S.Exponential(o, 0.5),
                    (lambda o: lrs_mod.ExponentialLR(o, 0.9), lambda o: lrs_mod.ExponentialLR(o, 0.5)), False),
    "inverse-time": (lambda o: S.InverseTime(o, k=0.3), lambda o: S.InverseTime(o, k=2.0), None, True),
    "inverse-sqrt": (lambda o: S.InverseSqrt(o, tau=4.0), lambda o: S.InverseSqrt(o, tau=0.5), None, True),
    "sqrt-decay": (lambda o: S.SqrtDecay(o, total_steps=30), lambda o: S.SqrtDecay(o, total_steps=9), None, True),
    "polynomial": (lambda o: S.Polynomial(o, total_iters=30, power=2.0),
                   lambda o: S.Polynomial(o, total_iters=8, power=0.5),
                   (lambda o: lrs_mod.PolynomialLR(o, total_iters=30, power=2.0),
                    lambda o: lrs_mod.PolynomialLR(o, total_iters=8, power=0.5)), False),
    "cosine": (lambda o: S.Cosine(o, T_max=25, eta_min=1e-3), lambda o: S.Cosine(o, T_max=6, eta_min=0.05),
               (lambda o: lrs_mod.CosineAnnealingLR(o, T_max=25, eta_min=1e-3),
                lambda o: lrs_mod.CosineAnnealingLR(o, T_max=6, eta_min=0.05)), False),
    "sgdr": (lambda o: S.CosineWarmRestarts(o, T_0=4, T_mult=2, eta_min=1e-3),
             lambda o: S.CosineWarmRestarts(o, T_0=11, T_mult=1, eta_min=0.02),
             (lambda o: lrs_mod.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2, eta_min=1e-3),
              lambda o: lrs_mod.CosineAnnealingWarmRestarts(o, T_0=11, T_mult=1, eta_min=0.02)), True),
    "cyclic": (lambda o: S.Cyclic(o, [0.01, 0.02], [0.1, 0.3], step_size_up=3, step_size_down=5, mode="exp_range",
                                  gamma=0.97, base_momentum=0.7, max_momentum=0.95),
               lambda o: S.Cyclic(o, 0.05, 0.5, step_size_up=10, mode="triangular"),
               (lambda o: lrs_mod.CyclicLR(o, [0.01, 0.02], [0.1, 0.3], step_size_up=3, step_size_down=5,
                                           mode="exp_range", gamma=0.97, base_momentum=0.7, max_momentum=0.95),
                lambda o: lrs_mod.CyclicLR(o, 0.05, 0.5, step_size_up=10, mode="triangular")), False),
    "onecycle": (lambda o: S.OneCycle(o, [0.4, 0.8], total_steps=40, pct_start=0.25, anneal_strategy="linear",
                                      div_factor=10.0, final_div_factor=100.0, three_phase=True),
                 lambda o: S.OneCycle(o, 0.1, total_steps=300, base_momentum=0.6),
                 (lambda o: lrs_mod.OneCycleLR(o, [0.4, 0.8], total_steps=40, pct_start=0.25,
                                               anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0,
                                               three_phase=True),
                  lambda o: lrs_mod.OneCycleLR(o, 0.1, total_steps=300, base_momentum=0.6)), False),
    "warmup": (lambda o: S.LinearWarmup(o, S.Constant(), warmup_steps=6, start_factor=0.25),
               lambda o: S.LinearWarmup(o, S.Constant(), warmup_steps=15, start_factor=0.5),
               (lambda o: lrs_mod.LinearLR(o, start_factor=0.25, total_iters=6),
                lambda o: lrs_mod.LinearLR(o, start_factor=0.5, total_iters=15)), False),
    "warmup-cosine": (lambda o: S.LinearWarmup(o, S.Cosine(T_max=20, eta_min=1e-3), warmup_steps=5),
                      lambda o: S.LinearWarmup(o, S.Step(step_size=2, gamma=0.5), warmup_steps=3,
                                               start_factor=0.5), None, False),
}


def _groups_pair():
    """cnnkit and torch SGD with momentum over two param groups of different lrs."""
    opt = ck.optim.SGD([{"params": [ck.Parameter(np.zeros(2))]}, {"params": [ck.Parameter(np.zeros(3))],
                                                                   "lr": 0.3}], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)]},
                            {"params": [torch.zeros(3, requires_grad=True)], "lr": 0.3}], lr=0.1, momentum=0.9)
    return opt, topt


def _state_of(g):
    return [g["lr"], g["betas"][0] if "betas" in g else g["momentum"]]


@pytest.mark.parametrize("name", list(LOADS))
def test_load_state_dict_restores_every_hyperparameter(name):
    make_a, make_b, tmake, exact = LOADS[name]
    opt_a, _ = _groups_pair()
    opt_b, _ = _groups_pair()
    a, b = make_a(opt_a), make_b(opt_b)
    for _ in range(13):
        a.step()
    sd = a.state_dict()
    sd = json.loads(json.dumps(sd))   # checkpoints store it as JSON
    b.load_state_dict(sd)
    assert b.state_dict() == a.state_dict()
    got, want = [], []
    for _ in range(25):
        want.append([_state_of(g) for g in opt_a.param_groups])
        got.append([_state_of(g) for g in opt_b.param_groups])
        a.step()
        b.step()
        want[-1].append(a.get_last_lr())
        got[-1].append(b.get_last_lr())
    assert got[1:] == want[1:]   # from the first step after the load on, B is A
    if tmake is None:
        return
    _, topt_a = _groups_pair()
    _, topt_b = _groups_pair()
    ta, tb = tmake[0](topt_a), tmake[1](topt_b)
    for _ in range(13):
        topt_a.step()
        ta.step()
    # torch's recursive schedules read the optimizer's lr, so its reference loads both, as a checkpoint does
    topt_b.load_state_dict(topt_a.state_dict())
    tb.load_state_dict(ta.state_dict())
    tgot = []
    for _ in range(25):
        topt_b.step()
        tb.step()
        tgot.append([g["lr"] for g in topt_b.param_groups])
    mine = [row[-1] for row in got]
    if exact:
        assert mine == tgot
    else:
        np.testing.assert_allclose(mine, tgot, rtol=1e-12, atol=1e-15)


def test_reduce_on_plateau_load_state_dict_restores_every_hyperparameter_as_torch():
    metrics = [1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 5.0, 3.0, 2.0, 1.0]
    opt_a, topt_a = _groups_pair()
    opt_b, topt_b = _groups_pair()
    kw_a = dict(mode="min", factor=0.1, patience=2, min_lr=[1e-3, 2e-3], cooldown=1)
    kw_b = dict(mode="max", factor=0.5, patience=10, threshold=0.3, threshold_mode="abs", eps=1e-3)
    a, ta = S.ReduceOnPlateau(opt_a, **kw_a), lrs_mod.ReduceLROnPlateau(topt_a, **kw_a)
    b, tb = S.ReduceOnPlateau(opt_b, **kw_b), lrs_mod.ReduceLROnPlateau(topt_b, **kw_b)
    for m in metrics:
        a.step(m)
        ta.step(m)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    tb.load_state_dict(ta.state_dict())
    for k in ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs", "eps", "best",
              "num_bad_epochs", "cooldown_counter", "default_min_lr"):
        assert getattr(b, k) == getattr(tb, k), k
    for g, tg in zip(opt_b.param_groups, topt_b.param_groups):
        g["lr"] = tg["lr"] = 0.4
    for m in [0.5, 0.6, 0.7, 0.4, 0.45, 0.5, 0.5, 0.5, 0.5, 0.3] * 3:
        b.step(m)
        tb.step(m)
        assert _lrs(opt_b) == _lrs(topt_b)
    assert min(_lrs(opt_b)) < 0.4


@pytest.mark.parametrize("mutate,err,match", [
    (lambda sd: sd.update(gamma="big"), TypeError, "gamma must be a real number"),
    (lambda sd: sd.update(step_size=0), ValueError, "invalid step_size 0"),
    (lambda sd: sd.update(step_size=2.5), TypeError, "step_size must be an int"),
    (lambda sd: sd.pop("gamma"), ValueError, r"missing \['gamma'\]"),
    (lambda sd: sd.update(warp=1), ValueError, r"unknown \['warp'\]"),
    (lambda sd: sd.update(base_lrs=[0.1]), ValueError, "base_lrs has 1 value.*2 param groups"),
    (lambda sd: sd.update(schedule="Cosine"), ValueError, "state dict is for 'Cosine'"),
])
def test_load_state_dict_validates_before_changing_anything(mutate, err, match):
    opt, _ = _groups_pair()
    a, b = S.Step(opt, step_size=3, gamma=0.5), S.Step(opt, step_size=7, gamma=0.1)
    a.step()
    sd = a.state_dict()
    mutate(sd)
    before = b.state_dict()
    with pytest.raises(err, match=match):
        b.load_state_dict(sd)
    assert b.state_dict() == before
    with pytest.raises(TypeError, match="state dict must be a dict"):
        b.load_state_dict([("t", 1)])


def test_load_state_dict_validates_nested_and_choice_fields():
    opt, _ = _groups_pair()
    c = S.Cyclic(opt, 0.01, 0.1, step_size_up=3)
    sd = c.state_dict()
    sd["mode"] = "sawtooth"
    with pytest.raises(ValueError, match="mode must be one of"):
        S.Cyclic(opt, 0.01, 0.1).load_state_dict(sd)
    m = S.MultiStep(opt, [2, 5])
    sd = m.state_dict()
    sd["milestones"] = [5, 2]
    with pytest.raises(ValueError, match="increasing"):
        S.MultiStep(opt, [1]).load_state_dict(sd)
    w = S.LinearWarmup(opt, S.Cosine(T_max=10), warmup_steps=3)
    sd = w.state_dict()
    sd["wrapped"]["T_max"] = -1
    w2 = S.LinearWarmup(opt, S.Cosine(T_max=4), warmup_steps=2)
    with pytest.raises(ValueError, match="invalid T_max -1"):
        w2.load_state_dict(sd)
    assert w2.warmup_steps == 2 and w2.schedule.T_max == 4


def test_linear_warmup_load_rebuilds_a_wrapped_schedule_of_another_class_with_its_own_base_lrs():
    opt_a, _ = _groups_pair()
    opt_b, _ = _groups_pair()
    inner = S.LinearWarmup(None, S.Cosine(T_max=7, eta_min=0.01), warmup_steps=2, start_factor=0.5,
                           base_lr=[0.5, 0.6])
    a = S.LinearWarmup(opt_a, inner, warmup_steps=3, start_factor=0.2)
    b = S.LinearWarmup(opt_b, S.Constant(), warmup_steps=9)
    for _ in range(4):
        a.step()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert type(b.schedule) is S.LinearWarmup and type(b.schedule.schedule) is S.Cosine
    assert b.schedule.base_lrs == [0.5, 0.6] and b.base_lrs == [0.1, 0.3]
    assert [b.step() for _ in range(12)] == [a.step() for _ in range(12)]
    # the wrapper's base lrs stay shared with a wrapped schedule built without its own
    c = S.LinearWarmup(opt_b, S.Cosine(T_max=4), warmup_steps=2)
    c.load_state_dict(S.LinearWarmup(opt_a, S.Cosine(T_max=6), warmup_steps=3).state_dict())
    assert c.schedule.base_lrs is c.base_lrs and c.schedule.T_max == 6


def test_reduce_on_plateau_fresh_state_dict_survives_json_and_a_scalar_min_lr_stays_scalar():
    opt, topt = _pair()
    kw = dict(mode="max", factor=0.5, min_lr=0.01, patience=0)
    a, tb = S.ReduceOnPlateau(opt, **kw), lrs_mod.ReduceLROnPlateau(topt, **kw)
    sd = json.loads(json.dumps(a.state_dict()))
    assert sd["best"] == -math.inf and sd["default_min_lr"] == 0.01
    b = S.ReduceOnPlateau(opt, min_lr=[0.2])
    b.load_state_dict(sd)
    assert b.mode == "max" and b.default_min_lr == 0.01
    _add_group(opt, topt, 0.05)
    for m in (1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0):
        b.step(m)
        tb.step(m)
        assert _lrs(opt) == _lrs(topt)
    assert _lrs(opt) == [0.01, 0.01]
