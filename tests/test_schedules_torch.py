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
