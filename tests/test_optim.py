"""ck.optim against torch.optim step for step (float64 rtol 1e-10, float32 close), plus state dicts and
bit-exact resume, the non-finite policy, clipping, L1, max-norm, decay_bias and bad hyperparameters."""
import itertools
import math

import numpy as np
import pytest

import cnnkit as ck
from cnnkit.optim import NonFiniteGradientError

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


# ---------------------------------------------------------------- state dicts and resume

def _all_opts():
    return [(ck.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
            (ck.optim.AdaGrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
            (ck.optim.RMSProp, dict(lr=0.01, centered=True, momentum=0.5)),
            (ck.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
            (ck.optim.AdamW, dict(lr=0.01, decay_bias=False))]


def _bits(arrays):
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


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


# ---------------------------------------------------------------- bad hyperparameters

def _ps():
    return [ck.Parameter(np.ones((3, 2), dtype=np.float32))]


@pytest.mark.parametrize("make,err,match", [
    (lambda: ck.optim.SGD(_ps(), lr=-0.1), ValueError, "SGD: invalid lr -0.1"),
    (lambda: ck.optim.Adam(_ps(), lr=-1e-3), ValueError, "Adam: invalid lr"),
    (lambda: ck.optim.Adam(_ps(), betas=(1.0, 0.999)), ValueError, r"beta1 .*must be in \[0, 1\)"),
    (lambda: ck.optim.Adam(_ps(), betas=(0.9, -0.1)), ValueError, r"beta2 .*must be in \[0, 1\)"),
    (lambda: ck.optim.AdamW(_ps(), betas=(0.9, 1.5)), ValueError, "AdamW: invalid beta2"),
    (lambda: ck.optim.Adam(_ps(), betas=0.9), ValueError, "betas must be a pair"),
    (lambda: ck.optim.SGD(_ps(), lr=0.1, nesterov=True), ValueError, "nesterov requires momentum > 0"),
    (lambda: ck.optim.SGD(_ps(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "dampening = 0"),
    (lambda: ck.optim.SGD([{"params": []}], lr=0.1), ValueError, "param group 0 has no params"),
    (lambda: ck.optim.SGD([{"lr": 0.1}], lr=0.1), ValueError, "param group 0 has no 'params'"),
    (lambda: ck.optim.SGD([], lr=0.1), ValueError, "empty parameter list"),
    (lambda: ck.optim.RMSProp(_ps(), eps=-1.0), ValueError, "invalid eps"),
    (lambda: ck.optim.AdaGrad(_ps(), lr_decay=-1.0), ValueError, "invalid lr_decay"),
    (lambda: ck.optim.AdaGrad(_ps(), initial_accumulator_value=-1.0), ValueError, "initial_accumulator_value"),
    (lambda: ck.optim.SGD(_ps(), lr=0.1, weight_decay=-1.0), ValueError, "invalid weight_decay"),
    (lambda: ck.optim.SGD(_ps(), lr="0.1"), TypeError, "lr must be a real number"),
    (lambda: ck.optim.SGD(_ps(), lr=0.1, nonfinite="ignore"), ValueError, "nonfinite must be"),
    (lambda: ck.optim.SGD([np.ones(3)], lr=0.1), TypeError, "Parameters"),
    (lambda: ck.optim.Adam(_ps(), max_norm=0.0), ValueError, "invalid max_norm"),
    (lambda: ck.optim.Adam(_ps(), clip_grad_norm=-1.0), ValueError, "invalid clip_grad_norm"),
    (lambda: ck.optim.Adam([{"params": _ps(), "beta": 0.9}]), ValueError, "unknown hyperparameters"),
])
def test_bad_hyperparameters_raise_clear_errors(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_same_parameter_in_two_groups_and_mixed_dtypes_raise():
    p = _ps()[0]
    with pytest.raises(ValueError, match="more than one param group"):
        ck.optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError, match="share one dtype"):
        ck.optim.SGD([p, ck.Parameter(np.ones(2))], lr=0.1)


def test_lr_set_negative_mid_run_raises_before_any_change():
    ps = _ps()
    opt = ck.optim.SGD(ps, lr=0.1)
    opt.param_groups[0]["lr"] = -1.0
    before = ps[0].data.copy()
    with pytest.raises(ValueError, match="invalid lr"):
        opt.step()
    np.testing.assert_array_equal(ps[0].data, before)


def test_kernels_reject_silent_copies():
    p = np.ones(8, dtype=np.float32)
    with pytest.raises(TypeError, match="adam_step: exp_avg must have dtype float32, got float64"):
        ck._C.adam_step(p, p.copy(), np.ones(8), p.copy(), None, 0.9, 0.999, 1e-8, -1e-3, 1.0, 1.0, 1.0, math.inf,
                        0.0, 0.0)
    with pytest.raises(ValueError, match="exp_avg must have 8 elements"):
        ck._C.adam_step(p, p.copy(), np.ones(7, np.float32), p.copy(), None, 0.9, 0.999, 1e-8, -1e-3, 1.0, 1.0,
                        1.0, math.inf, 0.0, 0.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        ck._C.sgd_step(np.ones(16, np.float32)[::2], p, None, -0.1, 0.0, 1.0, False, False, 1.0, math.inf, 0.0, 0.0)


def test_flat_kernels_at_two_threads_equal_one_thread():
    rng = np.random.default_rng(3)
    n = 100_003
    p0, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    outs = []
    old = ck.get_num_threads()
    try:
        for t in (1, 2):
            ck.set_num_threads(t)
            p, m, v = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
            ck._C.adam_step(p, g, m, v, None, 0.9, 0.999, 1e-8, -1e-3 / 0.1, 0.001 ** 0.5, 1.0, 1.0, math.inf,
                            0.0, 0.0)
            outs.append((p.tobytes(), m.tobytes(), v.tobytes()))
    finally:
        ck.set_num_threads(old)
    assert outs[0] == outs[1]


# ---------------------------------------------------------------- L-BFGS against torch.optim.LBFGS

def _logreg(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((64, 5))
    y = np.sign(X @ rng.standard_normal(5) + 0.3 * rng.standard_normal(64))
    return X, y, 0.1 * rng.standard_normal(5), 0.01, 1e-2


def _mlp(seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 4))
    Y = np.sin(X.sum(1, keepdims=True))
    return X, Y, [0.5 * rng.standard_normal(s) for s in [(4, 8), (8,), (8, 1), (1,)]]


@pytest.mark.parametrize("line_search", ["strong_wolfe", None])
def test_lbfgs_matches_torch_on_l2_logistic_regression(line_search):
    X, y, w0, b0, lam = _logreg()
    w, b = ck.Parameter(w0.copy()), ck.Parameter(np.array([b0]))
    opt = ck.optim.LBFGS([w, b], lr=1 if line_search else 0.5, max_iter=8, history_size=5,
                         line_search_fn=line_search)

    def closure():
        opt.zero_grad()
        z = X @ w.data + b.data[0]
        loss = np.mean(np.log1p(np.exp(-y * z))) + 0.5 * lam * w.data @ w.data
        dz = -y / (1 + np.exp(y * z)) / len(y)
        w.grad += X.T @ dz + lam * w.data
        b.grad += dz.sum()
        return loss

    tw = torch.tensor(w0.copy(), requires_grad=True)
    tb = torch.tensor([b0], dtype=torch.float64, requires_grad=True)
    topt = torch.optim.LBFGS([tw, tb], lr=1 if line_search else 0.5, max_iter=8, history_size=5,
                             line_search_fn=line_search)
    tX, ty = torch.tensor(X), torch.tensor(y)

    def tclosure():
        topt.zero_grad()
        loss = torch.log1p(torch.exp(-ty * (tX @ tw + tb[0]))).mean() + 0.5 * lam * tw @ tw
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
        topt.step(tclosure)
        np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b.data, tb.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert opt.state["func_evals"] == topt.state[tw]["func_evals"]
    assert opt.state["n_iter"] == topt.state[tw]["n_iter"]


def test_lbfgs_matches_torch_on_a_small_network():
    X, Y, init = _mlp()
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = ck.optim.LBFGS(ps, max_iter=15, line_search_fn="strong_wolfe")

    def closure():  # 4-8-1 tanh MLP, mean squared error, numpy backprop
        opt.zero_grad()
        W1, b1, W2, b2 = (p.data for p in ps)
        h = np.tanh(X @ W1 + b1)
        out = h @ W2 + b2
        loss = np.mean((out - Y) ** 2)
        dout = 2 * (out - Y) / out.size
        ps[2].grad += h.T @ dout
        ps[3].grad += dout.sum(0)
        dh = dout @ W2.T * (1 - h ** 2)
        ps[0].grad += X.T @ dh
        ps[1].grad += dh.sum(0)
        return loss

    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = torch.optim.LBFGS(tp, max_iter=15, line_search_fn="strong_wolfe")
    tX, tY = torch.tensor(X), torch.tensor(Y)

    def tclosure():
        topt.zero_grad()
        loss = ((torch.tanh(tX @ tp[0] + tp[1]) @ tp[2] + tp[3] - tY) ** 2).mean()
        loss.backward()
        return loss

    losses = []
    for _ in range(2):
        losses.append(opt.step(closure))
        topt.step(tclosure)
    for p, t in zip(ps, tp):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-7, atol=1e-9)
    assert closure() < 0.5 * losses[0]


def test_lbfgs_state_dict_resumes_bit_for_bit():
    """The history holds lists of arrays and of floats (ro); a resumed run equals the uninterrupted one."""
    X, y, w0, b0, lam = _logreg()

    def make():
        w = ck.Parameter(w0.copy())
        opt = ck.optim.LBFGS([w], max_iter=4, history_size=3, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            z = X @ w.data
            dz = -y / (1 + np.exp(y * z)) / len(y)
            w.grad += X.T @ dz + lam * w.data
            return np.mean(np.log1p(np.exp(-y * z))) + 0.5 * lam * w.data @ w.data
        return w, opt, closure

    w, opt, closure = make()
    opt.step(closure)
    sd = opt.state_dict()
    assert isinstance(sd["state"]["ro"], list) and all(isinstance(r, float) for r in sd["state"]["ro"])
    w2, opt2, closure2 = make()
    w2.data[...] = w.data
    opt2.load_state_dict(sd)
    for _ in range(2):
        opt.step(closure)
        opt2.step(closure2)
    assert w2.data.tobytes() == w.data.tobytes() and opt2.state["n_iter"] == opt.state["n_iter"] > 4


def test_lbfgs_rejects_groups_and_unknown_line_search():
    ps = _ps()
    with pytest.raises(ValueError, match="parameter groups"):
        ck.optim.LBFGS([{"params": ps}, {"params": [ck.Parameter(np.ones(2, np.float32))]}])
    with pytest.raises(ValueError, match="line_search_fn"):
        ck.optim.LBFGS(ps, line_search_fn="armijo")
    with pytest.raises(ValueError, match="invalid lr"):
        ck.optim.LBFGS(ps, lr=-1)


def test_step_refuses_parameters_rebound_elsewhere():
    ps = [ck.Parameter(np.ones((3, 2))), ck.Parameter(np.ones(2))]
    first = ck.optim.Adam(ps, lr=0.1)
    ck.optim.SGD(ps, lr=0.1)  # moves the parameters into its own buffer: `first` would train a stale copy
    with pytest.raises(ValueError, match="no longer lives in this optimizer's flat buffer"):
        first.step()
    q = ck.Parameter(np.ones(3))
    opt = ck.optim.SGD([q], lr=0.1)
    q.data = np.zeros(3)
    with pytest.raises(ValueError, match="rebound"):
        opt.step()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 63, 64, 65, 1000, 4099])
def test_grad_sumsq_finds_every_nonfinite_position(n, dtype):
    rng = np.random.default_rng(n)
    g = rng.standard_normal(n).astype(dtype)
    s, finite = ck._C.grad_sumsq(g)
    assert finite and s == pytest.approx(float(np.sum(g.astype(np.float64) ** 2)), rel=1e-12)
    for i in sorted({0, n // 2, n - 1}):
        for bad in (np.nan, np.inf, -np.inf):
            h = g.copy()
            h[i] = bad
            assert ck._C.grad_sumsq(h)[1] is False


@pytest.mark.parametrize("kw, exc, message", [
    (dict(history_size=0), ValueError, r"LBFGS: history_size must be >= 1, got 0"),
    (dict(max_iter=2.5), TypeError, r"LBFGS: max_iter must be an int, got float"),
    (dict(max_eval=0), ValueError, r"LBFGS: max_eval must be >= 1, got 0"),
    (dict(tolerance_change=-1), ValueError, r"LBFGS: invalid tolerance_change -1.0 \(must be >= 0\)"),
])
def test_lbfgs_bad_arguments_raise(kw, exc, message):
    with pytest.raises(exc, match=message):
        ck.optim.LBFGS(ck.Linear(2, 2).parameters(), **kw)
