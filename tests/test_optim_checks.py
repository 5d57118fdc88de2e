"""Bad hyperparameters and arguments raise clear errors; the flat kernels refuse silent copies and
agree across thread counts; a gradient's every non-finite position is found."""
import math

import numpy as np
import pytest

import cnnkit as ck
from helpers.optim_helpers import _ps

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------- bad hyperparameters

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
