# The fused optimizer-step kernels and the gradient-norm helpers (sgd_step, adagrad_step, rmsprop_step,
# adam_step, grad_sumsq, grad_scale_clamp, maxnorm_rows): the device entry points of cnnkit.ops._cuda against
# the cnnkit._C CPU bindings, with the same arguments. They run on the CuPy stand-in (which routes each entry
# point to the CPU binding of the same name: bit for bit) and on a GPU (1e-6 relative for float32). There is
# no "cpu" case: the CPU steps are checked against torch.optim in tests/test_optim_rules.py, and the norms
# across thread counts in tests/test_grad_sumsq.py.
import itertools

import numpy as np
import pytest

from cnnkit import _C

FLOATS = [np.float32, np.float64]
DEVICES = pytest.mark.parametrize("device", ["fakecupy", "cuda"], indirect=True)


def _gpu():
    from cnnkit.ops import _cuda as _cuda_ops
    return _cuda_ops


def _prep_cases():
    # (gscale, gclip, wd, l1): identity, coupled decay, clip by norm and value, L1
    return [(1.0, np.inf, 0.0, 0.0), (1.0, np.inf, 1e-2, 0.0), (0.5, 0.3, 0.0, 0.0), (1.0, np.inf, 1e-3, 1e-3)]


def _run_steps(device, dtype, step_cpu, step_gpu, nstate, steps=5, n=10007):
    """Run `steps` updates on the CPU and the device from the same start; compare params and state."""
    rng = np.random.default_rng(6)
    p = rng.standard_normal(n).astype(dtype)
    state = [np.abs(rng.standard_normal(n)).astype(dtype) * 0.1 for _ in range(nstate)]
    state[0] += 1  # RMSProp centered: square_avg - grad_avg**2 stays positive (no NaN to compare)
    pd, sd = device.asarray(p), [device.asarray(s) for s in state]
    for t in range(steps):
        g = rng.standard_normal(n).astype(dtype)
        step_cpu(t, p, g, state)
        step_gpu(t, pd, device.asarray(g), sd)
    if device.name == "fakecupy":
        np.testing.assert_array_equal(device.host(pd), p)
        for a, b in zip(sd, state):
            np.testing.assert_array_equal(device.host(a), b)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(device.host(pd), p, rtol=rtol, atol=rtol)
    for a, b in zip(sd, state):
        np.testing.assert_allclose(device.host(a), b, rtol=rtol, atol=rtol)


@DEVICES
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("prep", _prep_cases())
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_step_matches_cpu(device, dtype, prep, momentum, nesterov):
    def step(mod):
        return lambda t, p, g, st: mod.sgd_step(p, g, st[0] if momentum else None, -0.1, momentum, 0.9, nesterov,
                                                t == 0, *prep)
    _run_steps(device, dtype, step(_C), step(_gpu()), 1)


@DEVICES
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("prep", _prep_cases())
def test_adagrad_step_matches_cpu(device, dtype, prep):
    def step(mod):
        return lambda t, p, g, st: mod.adagrad_step(p, g, st[0], -0.01 / (1 + t * 0.01), 1e-10, *prep)
    _run_steps(device, dtype, step(_C), step(_gpu()), 1)


@DEVICES
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("prep", _prep_cases())
@pytest.mark.parametrize("centered,momentum", list(itertools.product([False, True], [0.0, 0.9])))
def test_rmsprop_step_matches_cpu(device, dtype, prep, centered, momentum):
    def step(mod):
        return lambda t, p, g, st: mod.rmsprop_step(p, g, st[0], st[1] if centered else None,
                                                    st[2] if momentum else None, -0.01, 0.99, 1e-8, momentum, *prep)
    _run_steps(device, dtype, step(_C), step(_gpu()), 3)


@DEVICES
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("prep", _prep_cases())
@pytest.mark.parametrize("amsgrad,decay", [(False, 1.0), (True, 1.0), (False, 1.0 - 1e-3 * 1e-2)])
def test_adam_step_matches_cpu(device, dtype, prep, amsgrad, decay):
    b1, b2, lr = 0.9, 0.999, 1e-3

    def step(mod):
        def f(t, p, g, st):
            k = t + 1
            mod.adam_step(p, g, st[0], st[1], st[2] if amsgrad else None, b1, b2, 1e-8, -lr / (1 - b1**k),
                          (1 - b2**k) ** 0.5, decay, *prep)
        return f
    _run_steps(device, dtype, step(_C), step(_gpu()), 3)


@DEVICES
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [0, 1, 255, 256, 100003, 3_000_001])
def test_grad_sumsq_and_clipping_match_cpu(device, dtype, n):
    rng = np.random.default_rng(7)
    g = rng.standard_normal(n).astype(dtype)
    s, finite = _C.grad_sumsq(g)
    sd, finited = _gpu().grad_sumsq(device.asarray(g))
    assert finited is True and finite is True
    if device.name == "fakecupy":
        assert sd == s
    assert sd == pytest.approx(s, rel=1e-12, abs=1e-12)
    if n:
        for bad in (np.nan, np.inf, -np.inf):
            h = g.copy()
            h[n // 2] = bad
            assert _gpu().grad_sumsq(device.asarray(h))[1] is False
    gd = device.asarray(g)
    _C.grad_scale_clamp(g, 0.7, 0.5)
    _gpu().grad_scale_clamp(gd, 0.7, 0.5)
    np.testing.assert_array_equal(device.host(gd), g)


@DEVICES
@pytest.mark.parametrize("dtype", FLOATS)
def test_maxnorm_rows_matches_cpu(device, dtype):
    rng = np.random.default_rng(8)
    p = (rng.standard_normal((33, 4, 3, 3)) * 3).astype(dtype)
    pd = device.asarray(p)
    _C.maxnorm_rows(p, 2.0)
    _gpu().maxnorm_rows(pd, 2.0)
    if device.name == "fakecupy":
        np.testing.assert_array_equal(device.host(pd), p)
    np.testing.assert_allclose(device.host(pd), p, rtol=1e-6 if dtype == np.float32 else 1e-13)
