"""ck.regularizers: values and gradients (finite differences), equivalence with the optimizers' fused
weight_decay / l1, decay_bias, and bad arguments."""
import numpy as np
import pytest

import cnnkit as ck
from cnnkit import regularizers as R


def params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [ck.Parameter(rng.standard_normal(s).astype(dtype)) for s in [(4, 3, 3, 3), (4,), (5, 6), (5,)]]


@pytest.mark.parametrize("reg", [R.L2(0.3), R.L1(0.2), R.ElasticNet(0.2, 0.3), R.L2(0.3, decay_bias=False)],
                         ids=repr)
def test_gradient_matches_central_differences(reg):
    ps = params()
    for p in ps:
        p.grad[...] = 0
    value = reg(ps)
    rng = np.random.default_rng(1)
    for p in ps:
        for _ in range(5):
            i = tuple(rng.integers(0, s) for s in p.shape)
            h = 1e-6
            old = p.data[i]
            p.data[i] = old + h
            fp = reg.loss(ps)
            p.data[i] = old - h
            fm = reg.loss(ps)
            p.data[i] = old
            assert p.grad[i] == pytest.approx((fp - fm) / (2 * h), rel=1e-6, abs=1e-9)
    assert value == pytest.approx(reg.loss(ps), rel=0)


def test_values_by_hand():
    p = ck.Parameter(np.array([[1.0, -2.0], [0.0, 3.0]]))
    b = ck.Parameter(np.array([5.0, -1.0]))
    assert R.L2(0.5).loss([p, b]) == pytest.approx(0.5 * 0.5 * (1 + 4 + 9 + 25 + 1))
    assert R.L1(0.5).loss([p, b]) == pytest.approx(0.5 * (1 + 2 + 3 + 5 + 1))
    assert R.ElasticNet(0.5, 2.0, decay_bias=False).loss([p, b]) == pytest.approx(0.5 * 6 + 0.5 * 2.0 * 14)
    R.L1(0.5)([p])
    np.testing.assert_array_equal(p.grad, [[0.5, -0.5], [0.0, 0.5]])  # sign(0) = 0


@pytest.mark.parametrize("cls", [ck.optim.SGD, ck.optim.Adam, ck.optim.RMSProp])
@pytest.mark.parametrize("decay_bias", [True, False])
def test_regularizer_grad_equals_fused_weight_decay_and_l1(cls, decay_bias):
    ps, qs = params(), params()
    rng = np.random.default_rng(2)
    kw = dict(lr=0.05, momentum=0.9) if cls is ck.optim.SGD else dict(lr=0.01)
    fused = cls(ps, weight_decay=0.1, l1=0.02, decay_bias=decay_bias, **kw)
    plain = cls(qs, **kw)
    reg = R.ElasticNet(l1=0.02, l2=0.1, decay_bias=decay_bias)
    for _ in range(30):
        gs = [rng.standard_normal(p.shape) for p in ps]
        fused.zero_grad()
        plain.zero_grad()
        for p, q, g in zip(ps, qs, gs):
            p.grad += g
            q.grad += g
        reg.add_grad(qs)
        fused.step()
        plain.step()
    for p, q in zip(ps, qs):  # the kernel may contract g + wd*p into one fma: rounding-level differences
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12, atol=1e-14)


def test_frozen_parameters_are_not_penalised():
    ps = params()
    ps[0].requires_grad = False
    assert R.L2(1.0).loss(ps) == pytest.approx(sum(0.5 * np.sum(p.data ** 2) for p in ps[1:]))


@pytest.mark.parametrize("make,err,match", [
    (lambda: R.L2(-0.1), ValueError, "L2: invalid lam -0.1"),
    (lambda: R.L1("a"), TypeError, "L1: lam must be a real number"),
    (lambda: R.ElasticNet(0.1, float("nan")), ValueError, "invalid l2"),
    (lambda: R.L2(0.1).loss([np.ones(3)]), TypeError, "Parameters"),
])
def test_bad_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()
