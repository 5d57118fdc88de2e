"""ck.schedules against torch.optim.lr_scheduler over 1,000 steps, closed forms for the rest, driving a cnnkit
optimizer (lr and cycled momentum / beta1), state-dict round trips and bad arguments."""
import math

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import schedules as S

torch = pytest.importorskip("torch")
lrs_mod = torch.optim.lr_scheduler
N = 1000
BASE = 0.1


def torch_values(make, n=N, opt_cls=None, **opt_kw):
    p = torch.zeros(1, requires_grad=True)
    opt = (opt_cls or torch.optim.SGD)([p], lr=BASE, **({"momentum": 0.9} if not opt_kw else opt_kw))
    sched = make(opt)
    lrs, moms = [], []
    for _ in range(n):
        g = opt.param_groups[0]
        lrs.append(g["lr"])
        moms.append(g["betas"][0] if "betas" in g else g["momentum"])
        opt.step()
        sched.step()
    return lrs, moms


def ck_values(make, n=N, opt_cls=None, **opt_kw):
    """Drive a cnnkit optimizer and read its groups, as a trainer would."""
    p = ck.Parameter(np.zeros(1))
    opt = (opt_cls or ck.optim.SGD)([p], lr=BASE, **({"momentum": 0.9} if not opt_kw else opt_kw))
    sched = make(opt)
    lrs, moms = [], []
    for _ in range(n):
        g = opt.param_groups[0]
        lrs.append(g["lr"])
        moms.append(g["betas"][0] if "betas" in g else g["momentum"])
        opt.step()
        sched.step()
    return lrs, moms, sched


# (cnnkit factory, torch factory, exact): exact schedules are computed the same way in both libraries; the
# others torch computes recursively from the previous lr, so they agree to rounding.
PAIRS = {
    "step": (lambda o: S.Step(o, step_size=30, gamma=0.5), lambda o: lrs_mod.StepLR(o, 30, 0.5), True),
    "multistep": (lambda o: S.MultiStep(o, [100, 250, 700], gamma=0.3),
                  lambda o: lrs_mod.MultiStepLR(o, [100, 250, 700], 0.3), True),
    "exponential": (lambda o: S.Exponential(o, 0.997), lambda o: lrs_mod.ExponentialLR(o, 0.997), False),
    "polynomial": (lambda o: S.Polynomial(o, total_iters=800, power=2.0),
                   lambda o: lrs_mod.PolynomialLR(o, total_iters=800, power=2.0), False),
    "cosine": (lambda o: S.Cosine(o, T_max=N, eta_min=1e-4),
               lambda o: lrs_mod.CosineAnnealingLR(o, T_max=N, eta_min=1e-4), False),
    "cosine-periodic": (lambda o: S.Cosine(o, T_max=150), lambda o: lrs_mod.CosineAnnealingLR(o, T_max=150),
                        False),
    "sgdr": (lambda o: S.CosineWarmRestarts(o, T_0=50, T_mult=1, eta_min=1e-3),
             lambda o: lrs_mod.CosineAnnealingWarmRestarts(o, T_0=50, T_mult=1, eta_min=1e-3), True),
    "sgdr-mult2": (lambda o: S.CosineWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-4),
                   lambda o: lrs_mod.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-4), True),
    "cyclic-triangular": (lambda o: S.Cyclic(o, 0.01, 0.1, step_size_up=70, step_size_down=30),
                          lambda o: lrs_mod.CyclicLR(o, 0.01, 0.1, step_size_up=70, step_size_down=30), True),
    "cyclic-triangular2": (lambda o: S.Cyclic(o, 0.01, 0.1, step_size_up=50, mode="triangular2"),
                           lambda o: lrs_mod.CyclicLR(o, 0.01, 0.1, step_size_up=50, mode="triangular2"), True),
    "cyclic-exp_range": (lambda o: S.Cyclic(o, 0.01, 0.1, step_size_up=40, mode="exp_range", gamma=0.998),
                         lambda o: lrs_mod.CyclicLR(o, 0.01, 0.1, step_size_up=40, mode="exp_range",
                                                    gamma=0.998), True),
    "onecycle-cos": (lambda o: S.OneCycle(o, max_lr=0.5, total_steps=N),
                     lambda o: lrs_mod.OneCycleLR(o, max_lr=0.5, total_steps=N), True),
    "onecycle-linear-3phase": (
        lambda o: S.OneCycle(o, max_lr=0.5, total_steps=N, anneal_strategy="linear", three_phase=True,
                             pct_start=0.25),
        lambda o: lrs_mod.OneCycleLR(o, max_lr=0.5, total_steps=N, anneal_strategy="linear", three_phase=True,
                                     pct_start=0.25), True),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_equals_torch_over_1000_steps(name):
    mk, tmk, exact = PAIRS[name]
    want_lr, want_m = torch_values(tmk)
    got_lr, got_m, sched = ck_values(mk)
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got_lr, want_lr, **tol)
    np.testing.assert_allclose(got_m, want_m, rtol=0, atol=0)  # momentum cycled exactly as torch, or left
    # the unbound schedule lists the same values
    np.testing.assert_allclose(sched.values(N), got_lr, rtol=0, atol=0)


def test_cyclic_cycles_adam_beta1_like_torch():
    mk = lambda o: S.Cyclic(o, 1e-4, 1e-2, step_size_up=25, base_momentum=0.85, max_momentum=0.95)  # noqa: E731
    tmk = lambda o: lrs_mod.CyclicLR(o, 1e-4, 1e-2, step_size_up=25, base_momentum=0.85,  # noqa: E731
                                     max_momentum=0.95)
    want_lr, want_b1 = torch_values(tmk, n=200, opt_cls=torch.optim.Adam, betas=(0.9, 0.999))
    got_lr, got_b1, _ = ck_values(mk, n=200, opt_cls=ck.optim.Adam, betas=(0.9, 0.999))
    assert got_lr == want_lr and got_b1 == want_b1
    assert min(got_b1) == pytest.approx(0.85) and max(got_b1) == pytest.approx(0.95)


def test_linear_warmup_wrapping_cosine_equals_torch_sequential():
    W = 50
    mk = lambda o: S.LinearWarmup(o, S.Cosine(T_max=N - W, eta_min=1e-4), warmup_steps=W,  # noqa: E731
                                  start_factor=0.1)

    def tmk(o):
        return lrs_mod.SequentialLR(o, [lrs_mod.LinearLR(o, start_factor=0.1, total_iters=W),
                                        lrs_mod.CosineAnnealingLR(o, T_max=N - W, eta_min=1e-4)], milestones=[W])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, _ = torch_values(tmk)
    got, _, _ = ck_values(mk)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_closed_forms_without_a_torch_twin():
    t = np.arange(N)
    np.testing.assert_allclose(S.InverseTime(k=0.5, base_lr=BASE).values(N), BASE / (1 + 0.5 * t), rtol=1e-15)
    np.testing.assert_allclose(S.InverseSqrt(tau=10.0, base_lr=BASE).values(N), BASE / np.sqrt(1 + t / 10),
                               rtol=1e-15)
    np.testing.assert_allclose(S.SqrtDecay(total_steps=600, base_lr=BASE).values(N),
                               BASE * np.sqrt(1 - np.minimum(t, 600) / 600), rtol=1e-15, atol=0)
    assert S.SqrtDecay(total_steps=600, base_lr=BASE).lr_at(600) == 0.0
    assert S.Constant(base_lr=BASE).values(3) == [BASE] * 3
    # the lecture's example: 0.97 per epoch
    assert S.Exponential(base_lr=1.0).values(3) == [1.0, 0.97, 0.97 ** 2]
    # warm-up on a constant lr: linear ramp, then flat
    w = S.LinearWarmup(None, warmup_steps=4, start_factor=0.5, base_lr=1.0).values(6)
    assert w == [0.5, 0.625, 0.75, 0.875, 1.0, 1.0]


def test_per_group_base_lrs():
    ps = [ck.Parameter(np.zeros(2)), ck.Parameter(np.zeros(3))]
    opt = ck.optim.SGD([dict(params=[ps[0]], lr=0.1), dict(params=[ps[1]], lr=0.01)], lr=0.1)
    sched = S.Step(opt, step_size=2, gamma=0.5)
    for _ in range(4):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.1 * 0.25, 0.01 * 0.25]


def test_reduce_on_plateau_equals_torch():
    rng = np.random.default_rng(0)
    metrics = list(np.maximum.accumulate(rng.random(300)) * -1 + 2)  # improves then plateaus
    metrics = metrics[:100] + [metrics[99]] * 100 + list(rng.random(100))
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=BASE)
    tsched = lrs_mod.ReduceLROnPlateau(topt, factor=0.5, patience=5, cooldown=3, min_lr=1e-4)
    q = ck.Parameter(np.zeros(1))
    opt = ck.optim.SGD([q], lr=BASE)
    sched = S.ReduceOnPlateau(opt, factor=0.5, patience=5, cooldown=3, min_lr=1e-4)
    got, want = [], []
    for m in metrics:
        tsched.step(m)
        sched.step(m)
        want.append(topt.param_groups[0]["lr"])
        got.append(opt.param_groups[0]["lr"])
    assert got == want and min(got) < BASE
    sd = sched.state_dict()
    s2 = S.ReduceOnPlateau(opt, factor=0.5, patience=5, cooldown=3, min_lr=1e-4)
    s2.load_state_dict(sd)
    assert s2.state_dict() == sd


RESUMABLE = {k: PAIRS[k][0] for k in ["cosine", "sgdr-mult2", "onecycle-cos", "cyclic-triangular2"]}
RESUMABLE["warmup-cosine"] = lambda o: S.LinearWarmup(o, S.Cosine(T_max=200), warmup_steps=30)


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_state_dict_resume(name):
    mk = RESUMABLE[name]
    full, _, _ = ck_values(mk, n=300)
    p = ck.Parameter(np.zeros(1))
    opt = ck.optim.SGD([p], lr=BASE, momentum=0.9)
    s1 = mk(opt)
    for _ in range(120):
        s1.step()
    sd = s1.state_dict()
    opt2 = ck.optim.SGD([ck.Parameter(np.zeros(1))], lr=BASE, momentum=0.9)
    s2 = mk(opt2)
    s2.load_state_dict(sd)
    rest = [s2.step()[0] for _ in range(179)]
    assert rest == full[121:300]


@pytest.mark.parametrize("make,err,match", [
    (lambda: S.Step(base_lr=0.1, step_size=0), ValueError, "Step: invalid step_size 0"),
    (lambda: S.Cosine(base_lr=0.1, T_max=10, eta_min=-1.0), ValueError, "invalid eta_min"),
    (lambda: S.Cyclic(None, 0.1, 0.2, mode="sawtooth"), ValueError, "mode must be one of"),
    (lambda: S.OneCycle(None, 0.1, total_steps=10, anneal_strategy="exp"), ValueError, "anneal_strategy"),
    (lambda: S.MultiStep(base_lr=0.1, milestones=[5, 3]), ValueError, "increasing"),
    (lambda: S.Exponential(base_lr=0.1, gamma="x"), TypeError, "gamma must be a real number"),
    (lambda: S.Cyclic(ck.optim.AdaGrad([ck.Parameter(np.zeros(1))]), 0.1, 0.2), ValueError, "cycle_momentum"),
    (lambda: S.LinearWarmup(None, S.Cosine(ck.optim.SGD([ck.Parameter(np.zeros(1))], lr=0.1), 10), 5),
     ValueError, "optimizer=None"),
])
def test_bad_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_onecycle_past_total_steps_raises():
    s = S.OneCycle(None, 0.1, total_steps=10)
    with pytest.raises(ValueError, match="more than total_steps"):
        s.lr_at(11)
    assert math.isclose(s.lr_at(10), s.lr_at(9) - (s.lr_at(9) - s.lr_at(10)))


# ---------------------------------------------------------------- LR range test

class TinySoftmax:
    """A duck-typed model with the public model API: model(x), backward(dscores), parameters(), zero_grad()."""

    def __init__(self, D, C, seed=0):
        rng = np.random.default_rng(seed)
        self.W = ck.Parameter(0.01 * rng.standard_normal((D, C)))
        self.b = ck.Parameter(np.zeros(C))

    def parameters(self):
        return [self.W, self.b]

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    def __call__(self, x):
        self.x = x
        return x @ self.W.data + self.b.data

    def backward(self, dscores):
        self.W.grad += self.x.T @ dscores
        self.b.grad += dscores.sum(0)
        return dscores @ self.W.data.T


def softmax_ce(scores, y):
    s = scores - scores.max(1, keepdims=True)
    p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    d = p.copy()
    d[np.arange(len(y)), y] -= 1
    return loss, d / len(y)


def _batches(n=20, seed=0):
    centers = np.random.default_rng(0).standard_normal((3, 10))  # one problem; seed picks the samples
    rng = np.random.default_rng(100 + seed)
    out = []
    for _ in range(n):
        y = rng.integers(0, 3, 32)
        out.append((centers[y] + 2 * rng.standard_normal((32, 10)), y))
    return out


def test_lr_finder_raises_lr_exponentially_stops_at_3x_and_restores_the_model():
    model = TinySoftmax(10, 3)
    before = [p.data.copy() for p in model.parameters()]
    res = ck.lr_find(model, softmax_ce, _batches(), start_lr=1e-5, end_lr=1e3, num_steps=200)
    lrs = np.array(res.lrs)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1e3 / 1e-5) ** (1 / 199), rtol=1e-12)
    assert "3 x initial" in res.stopped_because
    assert res.losses[-1] > 3 * res.losses[0]
    assert all(loss <= 3 * res.losses[0] for loss in res.losses[:-1])
    assert len(res.lrs) < 200 and min(res.losses) < 0.5 * res.losses[0]  # it learned, then blew up
    assert 1e-5 < res.suggestion < res.lrs[-1] and res.suggestion <= res.min_loss_lr
    for p, a in zip(model.parameters(), before):
        assert p.data.tobytes() == a.tobytes()
    # the suggested lr trains this model well
    opt = ck.optim.SGD(model.parameters(), lr=res.suggestion, momentum=0.9)
    for x, y in _batches(30, seed=1):
        model.zero_grad()
        loss, d = softmax_ce(model(x), y)
        model.backward(d)
        opt.step()
    x, y = _batches(1, seed=2)[0]
    assert softmax_ce(model(x), y)[0] < 0.6 * res.losses[0]


def test_lr_finder_restores_a_passed_optimizer_and_checks_arguments():
    model = TinySoftmax(10, 3)
    opt = ck.optim.Adam(model.parameters(), lr=0.123)
    res = ck.lr_find(model, softmax_ce, _batches(5), optimizer=opt, num_steps=10)
    assert res.stopped_because in ("reached end_lr", "ran out of batches") or "initial" in res.stopped_because
    assert opt.param_groups[0]["lr"] == 0.123 and opt.state[0] == {}
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        ck.lr_find(model, softmax_ce, _batches(2), start_lr=1.0, end_lr=0.1)


def test_lr_finder_keeps_an_existing_optimizer_working():
    model = TinySoftmax(10, 3)
    opt = ck.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ck.lr_find(model, softmax_ce, _batches(5), num_steps=5)  # its own default optimizer, then restored
    x, y = _batches(1)[0]
    model.zero_grad()
    model.backward(softmax_ce(model(x), y)[1])
    w = model.W.data.copy()
    opt.step()  # still bound to the model's parameters
    assert not np.array_equal(model.W.data, w)


def test_a_schedule_needs_an_optimizer_object():
    with pytest.raises(TypeError, match=r"Cosine: optimizer must be a cnnkit optimizer \(with param_groups\), got list"):
        ck.schedules.Cosine([0.1], T_max=3)
