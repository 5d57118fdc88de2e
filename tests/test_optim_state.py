"""Optimizer state dicts and bit-exact resume, and the non-finite gradient policy."""
import numpy as np
import pytest

import cnnkit as ck
from cnnkit.optim import NonFiniteGradientError
from helpers.optim_helpers import problem, set_grads, SHAPES, _all_opts, _bits

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------- state dicts and resume

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cls,kw", _all_opts(), ids=lambda v: getattr(v, "__name__", ""))
def test_resume_from_state_dict_is_bit_exact(cls, kw, dtype):
    init, grads = problem(dtype, steps=40)
    # uninterrupted
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = cls(ps, **kw)
    for k in range(40):
        opt.zero_grad()
        set_grads(ps, grads[k])
        opt.step()
    # interrupted at 17: save, rebuild everything from the saved numbers, continue
    qs = [ck.Parameter(a.copy()) for a in init]
    o1 = cls(qs, **kw)
    for k in range(17):
        o1.zero_grad()
        set_grads(qs, grads[k])
        o1.step()
    sd = o1.state_dict()
    saved = [q.data.copy() for q in qs]
    for k in range(17, 20):  # the saved dict is a snapshot: later steps must not change it
        o1.zero_grad()
        set_grads(qs, grads[k])
        o1.step()
    rs = [ck.Parameter(a) for a in saved]
    o2 = cls(rs, **kw)
    o2.load_state_dict(sd)
    for k in range(17, 40):
        o2.zero_grad()
        set_grads(rs, grads[k])
        o2.step()
    assert _bits(p.data for p in ps) == _bits(r.data for r in rs)
    a, b = opt.state_dict()["state"][0], o2.state_dict()["state"][0]
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].tobytes() == b[key].tobytes(), key
        else:
            assert a[key] == b[key], key


def test_state_dict_round_trips_hyperparameters():
    ps = [ck.Parameter(np.ones(s)) for s in SHAPES]
    opt = ck.optim.Adam([dict(params=ps[:2], lr=0.5), dict(params=ps[2:])], lr=0.01, betas=(0.8, 0.9))
    opt.param_groups[1]["lr"] = 0.123
    sd = opt.state_dict()
    qs = [ck.Parameter(np.ones(s)) for s in SHAPES]
    o2 = ck.optim.Adam([dict(params=qs[:2]), dict(params=qs[2:])])
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["lr"] == 0.5 and o2.param_groups[1]["lr"] == 0.123
    assert o2.param_groups[1]["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match="param groups"):
        ck.optim.Adam(qs).load_state_dict(sd)
    with pytest.raises(ValueError, match="Adam"):
        ck.optim.SGD([dict(params=qs[:2]), dict(params=qs[2:])], lr=0.1).load_state_dict(sd)


# ---------------------------------------------------------------- non-finite gradients

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("cls,kw", _all_opts(), ids=lambda v: getattr(v, "__name__", ""))
def test_nonfinite_skip_leaves_everything_bit_unchanged(cls, kw, bad):
    init, grads = problem(np.float32, steps=4)
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = cls([dict(params=ps[:2]), dict(params=ps[2:])], **kw)
    for k in range(3):
        opt.zero_grad()
        set_grads(ps, grads[k])
        opt.step()
    before_p = _bits(p.data for p in ps)
    before_s = opt.state_dict()
    opt.zero_grad()
    set_grads(ps, grads[3])
    ps[3].grad[2] = bad  # second group: the first group must not have been touched either
    opt.step()
    assert opt.skipped_steps == 1
    assert _bits(p.data for p in ps) == before_p
    after_s = opt.state_dict()
    for sa, sb in zip(before_s["state"], after_s["state"]):
        assert sa.keys() == sb.keys()
        for key in sa:
            same = sa[key].tobytes() == sb[key].tobytes() if isinstance(sa[key], np.ndarray) else sa[key] == sb[key]
            assert same, key


def test_nonfinite_raise_names_the_parameter_and_changes_nothing():
    init, grads = problem(np.float64, steps=2)
    ps = [ck.Parameter(a.copy(), name=f"w{i}") for i, a in enumerate(init)]
    opt = ck.optim.Adam(ps, lr=0.1, nonfinite="raise")
    set_grads(ps, grads[0])
    opt.step()
    before_p, before_s = _bits(p.data for p in ps), opt.state_dict()
    set_grads(ps, grads[1])
    ps[4].grad[0, 0, 1, 1] = np.nan
    with pytest.raises(NonFiniteGradientError, match="w4"):
        opt.step()
    assert _bits(p.data for p in ps) == before_p
    st = opt.state_dict()["state"][0]
    assert st["step"] == 1 and st["exp_avg"].tobytes() == before_s["state"][0]["exp_avg"].tobytes()
    assert opt.skipped_steps == 0
