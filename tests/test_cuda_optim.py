"""The optimizers on the GPU: CuPy parameters against the same optimizer on numpy.

Two halves. The first runs everywhere, on the strict CuPy stand-in of tests/helpers/fakecupy.py, whose _cuda_ops
routing emulates the device control block on the host with the CPU kernels: there a device run must equal the
CPU run bit for bit, step() must read nothing back to the host with nonfinite="skip", and the counters must be
read lazily (one host sync per read). The second needs a GPU, a CUDA build and CuPy (skipped otherwise, with
cnnkit.cuda.status() as the reason): the CUDA kernels against the CPU kernels within 1e-6 relative. It was
written on a machine with no GPU and has NOT run yet. The kernels' logic under the control block is also checked
on the CPU by tools/cuda_emu (EMU_CASE(optim_ctl)).
"""
import math

import numpy as np
import pytest

import cnnkit as ck

from helpers import fakecupy

needs_cuda = pytest.mark.skipif(not ck.cuda.is_available(), reason=f"CUDA unavailable: {ck.cuda.status()}")

# (class, hyperparameters): every rule, and every option the step folds in
CONFIGS = [
    (ck.optim.SGD, dict(lr=0.1)),
    (ck.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=1e-2)),
    (ck.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, clip_grad_norm=1.0, maximize=True)),
    (ck.optim.AdaGrad, dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1, l1=1e-3)),
    (ck.optim.RMSProp, dict(lr=0.01, centered=True, momentum=0.5, clip_grad_value=0.5)),
    (ck.optim.RMSProp, dict(lr=0.01, weight_decay=1e-2, decay_bias=False)),
    (ck.optim.Adam, dict(lr=0.01, amsgrad=True, clip_grad_norm=2.0, max_norm=1.5)),
    (ck.optim.Adam, dict(lr=0.01, weight_decay=1e-2, l1=1e-3, decay_bias=False)),
    (ck.optim.AdamW, dict(lr=0.01, maximize=True)),
]
IDS = [f"{c.__name__}-{'-'.join(k for k in kw if k != 'lr') or 'plain'}" for c, kw in CONFIGS]
SHAPES = [(6, 5), (6,), (4, 3, 2, 2), (4,)]


def _params(xp, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [ck.Parameter(xp.asarray(rng.standard_normal(s).astype(dtype)), name=f"p{i}")
            for i, s in enumerate(SHAPES)]


def _groups(ps, two_groups):
    """One group, or two (the second with its own lr), so that the control block holds two step counters."""
    return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.03}] if two_groups else ps


def _grads(step, dtype, bad=None):
    rng = np.random.default_rng(100 + step)
    gs = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    if bad is not None:
        gs[2].reshape(-1)[3] = bad   # a non-finite gradient in the last group only: every group must skip
    return gs


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a


def _run(cls, kw, xp, dtype, steps, bad_step, two_groups=True):
    """Steps with fresh gradients, a non-finite one at bad_step; returns (params, optimizer)."""
    ps = _params(xp, dtype)
    opt = cls(_groups(ps, two_groups), **kw)
    for t in range(steps):
        for p, g in zip(ps, _grads(t, dtype, np.nan if t == bad_step else None)):
            p.grad[...] = xp.asarray(g)
        opt.step()
    return ps, opt


def _state_arrays(opt):
    sd = opt.state_dict()
    return {(gi, k): _host(v) for gi, st in enumerate(sd["state"]) for k, v in st.items()}, sd


# ---------------------------------------------------------------- on the stand-in (runs everywhere)

@pytest.fixture
def fcp(monkeypatch):
    return fakecupy.install(monkeypatch)


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("bad_step", [0, 2])
def test_device_orchestration_equals_cpu_bit_for_bit_without_host_reads(fcp, cls, kw, bad_step):
    cpu_ps, cpu_opt = _run(cls, kw, np, np.float32, 5, bad_step)
    ps = _params(fcp, np.float32)
    opt = cls(_groups(ps, True), **kw)
    for t in range(5):
        for p, g in zip(ps, _grads(t, np.float32, np.nan if t == bad_step else None)):
            p.grad[...] = fcp.asarray(g)
        with fakecupy.counting() as c:
            opt.step()
        assert c.syncs == [], f"host reads inside step {t}: {c.syncs}"
        assert c.h2d == [], f"host-to-device copies inside step {t}: {c.h2d}"
    for p, q in zip(ps, cpu_ps):
        assert isinstance(p.data, fakecupy.ndarray)
        np.testing.assert_array_equal(p.data.get(), q.data)
    # the counters: read lazily, one host sync per read
    with fakecupy.counting() as c:
        assert opt.skipped_steps == 1 == cpu_opt.skipped_steps
    assert len(c.syncs) == 1
    with fakecupy.counting() as c:
        assert opt.last_grad_norm == cpu_opt.last_grad_norm
    assert len(c.syncs) == 1
    dev, sd = _state_arrays(opt)
    host, cpu_sd = _state_arrays(cpu_opt)
    assert dev.keys() == host.keys() and sd["skipped_steps"] == cpu_sd["skipped_steps"] == 1
    for k in host:
        np.testing.assert_array_equal(dev[k], host[k], err_msg=str(k))
    assert all(isinstance(v, fakecupy.ndarray) for st in sd["state"] for v in st.values() if not np.isscalar(v))
    assert [st.get("step") for st in sd["state"]] == [st.get("step") for st in cpu_sd["state"]] == [4, 4]


@pytest.mark.parametrize("cls,kw", CONFIGS[1:2] + CONFIGS[6:7], ids=IDS[1:2] + IDS[6:7])
def test_skipped_step_on_the_device_leaves_params_and_state_bit_unchanged(fcp, cls, kw):
    ps, opt = _run(cls, kw, fcp, np.float64, 2, None)
    before = [p.data.get() for p in ps]
    state_before, _ = _state_arrays(opt)
    for p, g in zip(ps, _grads(9, np.float64, np.inf)):
        p.grad[...] = fcp.asarray(g)
    opt.step()
    for p, b in zip(ps, before):
        assert p.data.get().tobytes() == b.tobytes()
    state_after, sd = _state_arrays(opt)
    assert all(np.asarray(state_after[k]).tobytes() == np.asarray(state_before[k]).tobytes() for k in state_before)
    assert opt.skipped_steps == 1 and [st["step"] for st in sd["state"]] == [2, 2]
    assert math.isinf(opt.last_grad_norm) or math.isnan(opt.last_grad_norm)


def test_nonfinite_raise_on_the_device_reads_the_flag_once_and_changes_nothing(fcp):
    ps = _params(fcp, np.float32)
    opt = ck.optim.Adam(ps, lr=0.1, nonfinite="raise")
    for p, g in zip(ps, _grads(0, np.float32)):
        p.grad[...] = fcp.asarray(g)
    with fakecupy.counting() as c:
        opt.step()
    assert len(c.syncs) == 1, c.syncs
    before = [p.data.get() for p in ps]
    ps[3].grad[1] = np.float32(np.nan)
    with pytest.raises(ck.optim.NonFiniteGradientError, match=r"Parameter\(p3.*param group 0.*unchanged"):
        opt.step()
    assert all((p.data.get() == b).all() for p, b in zip(ps, before))
    assert opt.skipped_steps == 0 and opt.state_dict()["state"][0]["step"] == 1


@pytest.mark.parametrize("cls,kw", [CONFIGS[1], CONFIGS[3], CONFIGS[6]], ids=[IDS[1], IDS[3], IDS[6]])
def test_state_follows_the_model_to_the_device_and_back(fcp, cls, kw):
    """model.to() moves the FlatBuffers in place; the optimizer moves its state at the next step."""
    def run(to_device):
        model = ck.Sequential(ck.Linear(5, 4, seed=0), ck.ReLU(), ck.Linear(4, 3, seed=1))
        opt = cls(model.parameters(), **kw)
        for t in range(6):
            if to_device and t == 2:
                model.to("cuda")
            if to_device and t == 4:
                model.to("cpu")
            for i, p in enumerate(model.parameters()):
                g = np.random.default_rng(10 * t + i).standard_normal(p.shape).astype(np.float32)
                if t == 3 and i == 0:
                    g[0, 0] = np.nan
                p.grad[...] = fcp.asarray(g) if not isinstance(p.grad, np.ndarray) else g
            opt.step()
            if to_device and t in (2, 3):
                assert all(isinstance(v, fakecupy.ndarray) for v in opt.state[0].values() if not np.isscalar(v))
        return model, opt
    a, oa = run(False)
    b, ob = run(True)
    for p, q in zip(a.parameters(), b.parameters()):
        assert isinstance(q.data, np.ndarray)
        np.testing.assert_array_equal(q.data, p.data)
    assert ob.skipped_steps == oa.skipped_steps == 1
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["state"][0].keys() == sb["state"][0].keys()
    for k, v in sa["state"][0].items():
        np.testing.assert_array_equal(sb["state"][0][k], v)


@pytest.mark.parametrize("cls,kw", [CONFIGS[2], CONFIGS[4], CONFIGS[6]], ids=[IDS[2], IDS[4], IDS[6]])
def test_state_dict_round_trips_across_devices(fcp, cls, kw):
    """A device state dict loads into a CPU optimizer and the reverse; both continue as the uninterrupted run."""
    ref_ps, _ = _run(cls, kw, np, np.float64, 6, 1)
    gpu_ps, gpu_opt = _run(cls, kw, fcp, np.float64, 3, 1)
    cpu_ps = [ck.Parameter(p.data.get(), name=p.name) for p in gpu_ps]
    cpu_opt = cls(_groups(cpu_ps, True), **kw)
    cpu_opt.load_state_dict(gpu_opt.state_dict())   # device arrays -> host
    assert all(isinstance(v, np.ndarray) for st in cpu_opt.state for v in st.values() if not np.isscalar(v))
    back_ps = [ck.Parameter(fcp.asarray(p.data), name=p.name) for p in cpu_ps]
    back = cls(_groups(back_ps, True), **kw)
    back.load_state_dict(cpu_opt.state_dict())       # host arrays -> device
    assert all(isinstance(v, fakecupy.ndarray) for st in back.state for v in st.values() if not np.isscalar(v))
    assert back.skipped_steps == cpu_opt.skipped_steps == 1
    for t in range(3, 6):
        for ps, xp in ((cpu_ps, np), (back_ps, fcp)):
            for p, g in zip(ps, _grads(t, np.float64)):
                p.grad[...] = xp.asarray(g)
        cpu_opt.step()
        back.step()
    for a, b, r in zip(cpu_ps, back_ps, ref_ps):
        np.testing.assert_array_equal(a.data, r.data)
        np.testing.assert_array_equal(b.data.get(), r.data)


def test_a_skipped_first_step_keeps_sgds_first_step_rule_across_state_dicts(fcp):
    """SGD's momentum buffer is allocated before the device knows the step is skipped; it must still start
    as buf = g at the first taken step, also after a state-dict round trip (dampening makes it visible)."""
    kw = dict(lr=0.1, momentum=0.9, dampening=0.5)
    ref_ps, _ = _run(ck.optim.SGD, kw, np, np.float64, 3, 0)
    ps, opt = _run(ck.optim.SGD, kw, fcp, np.float64, 1, 0)
    sd = opt.state_dict()
    assert sd["state"][0] == {} or "momentum_buffer" not in sd["state"][0]
    cpu_ps = [ck.Parameter(p.data.get()) for p in ps]
    cpu = ck.optim.SGD(_groups(cpu_ps, True), **kw)
    cpu.load_state_dict(sd)
    for t in (1, 2):
        for (p, q), g in zip(zip(ps, cpu_ps), _grads(t, np.float64)):
            p.grad[...] = fcp.asarray(g)
            q.grad[...] = g
        opt.step()
        cpu.step()
    for p, q, r in zip(ps, cpu_ps, ref_ps):
        np.testing.assert_array_equal(p.data.get(), r.data)
        np.testing.assert_array_equal(q.data, r.data)


def _twin_params(xp, dtype):
    """The same parameters and (large) gradients on the CPU and on the device."""
    cpu, dev = _params(np, dtype), _params(xp, dtype)
    for (p, q), g in zip(zip(cpu, dev), _grads(0, dtype)):
        p.grad[...] = g * 3
        q.grad[...] = xp.asarray(g * 3)
    return cpu, dev


def test_clipping_helpers_on_the_device_equal_the_cpu_without_host_reads(fcp):
    cpu, dev = _twin_params(fcp, np.float32)
    norm = ck.optim.clip_grad_norm_(cpu, 1.0)
    with fakecupy.counting() as c:
        dnorm = ck.optim.clip_grad_norm_(dev, 1.0)
        ck.optim.clip_grad_value_(dev, 0.05)
        ck.optim.apply_max_norm_(dev, 0.5)
    assert c.syncs == []
    ck.optim.clip_grad_value_(cpu, 0.05)
    ck.optim.apply_max_norm_(cpu, 0.5)
    assert isinstance(dnorm, fakecupy.ndarray) and dnorm.shape == () and float(dnorm.get()) == norm > 1.0
    for p, q in zip(cpu, dev):
        np.testing.assert_array_equal(q.grad.get(), p.grad)
        np.testing.assert_array_equal(q.data.get(), p.data)
    dev[1].grad[0] = np.float32(np.inf)
    before = [q.grad.get() for q in dev]
    assert math.isnan(float(ck.optim.clip_grad_norm_(dev, 1.0).get()))
    assert all(q.grad.get().tobytes() == b.tobytes() for q, b in zip(dev, before))
    with pytest.raises(TypeError, match="clip_grad_norm_: mixed devices"):
        ck.optim.clip_grad_norm_(cpu + dev, 1.0)


def test_add_param_group_on_the_device(fcp):
    ps = _params(fcp, np.float32)
    opt = ck.optim.Adam(ps[:2], lr=0.1)
    for p, g in zip(ps, _grads(0, np.float32)):
        p.grad[...] = fcp.asarray(g)
    opt.step()
    opt.add_param_group({"params": ps[2:], "lr": 0.01})
    opt.step()
    assert [st["step"] for st in opt.state_dict()["state"]] == [2, 1]
    with pytest.raises(TypeError, match="param group 2 is on the CPU but this optimizer's parameters are not"):
        opt.add_param_group({"params": _params(np, np.float32, seed=1)[:1]})


def test_lbfgs_on_the_device_equals_the_cpu(fcp):
    """A least-squares problem; LBFGS reads its scalars back (a line search), so only the result is compared."""
    rng = np.random.default_rng(3)
    A, b = rng.standard_normal((12, 5)), rng.standard_normal(12)

    def solve(xp):
        w = ck.Parameter(xp.zeros(5))
        Ad, bd = xp.asarray(A), xp.asarray(b)
        opt = ck.optim.LBFGS([w], lr=1, max_iter=50, tolerance_grad=1e-12, tolerance_change=1e-14,
                             line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            r = Ad @ w.data - bd
            w.grad[...] = Ad.T @ r
            return 0.5 * (r * r).sum()
        opt.step(closure)
        return w.data, opt
    wc, oc = solve(np)
    wd, od = solve(fcp)
    np.testing.assert_array_equal(wd.get(), wc)
    # it did solve the problem (to its stopping tolerances), so the equality above covers real iterations
    np.testing.assert_allclose(wc, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-6, atol=1e-8)
    assert oc.state["n_iter"] > 3
    assert isinstance(od.state_dict()["state"]["d"], fakecupy.ndarray)


# ---------------------------------------------------------------- on a real GPU (CuPy, the CUDA kernels)

@pytest.fixture
def cp():
    cupy = pytest.importorskip("cupy")
    return cupy


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_gpu_optimizer_matches_cpu(cp, cls, kw, dtype):
    """Five steps with a skipped non-finite one, two groups: params and state within 1e-6 relative."""
    cpu_ps, cpu_opt = _run(cls, kw, np, dtype, 5, 2)
    ps, opt = _run(cls, kw, cp, dtype, 5, 2)
    assert opt.skipped_steps == 1
    assert opt.last_grad_norm == pytest.approx(cpu_opt.last_grad_norm, rel=1e-6)
    for p, q in zip(ps, cpu_ps):
        np.testing.assert_allclose(p.data.get(), q.data, rtol=1e-6, atol=1e-6)
    dev, sd = _state_arrays(opt)
    host, cpu_sd = _state_arrays(cpu_opt)
    assert dev.keys() == host.keys()
    for k in host:
        np.testing.assert_allclose(dev[k], host[k], rtol=1e-6, atol=1e-6, err_msg=str(k))
    assert [st.get("step") for st in sd["state"]] == [st.get("step") for st in cpu_sd["state"]] == [4, 4]


@needs_cuda
@pytest.mark.parametrize("cls,kw", [CONFIGS[2], CONFIGS[3], CONFIGS[6]], ids=[IDS[2], IDS[3], IDS[6]])
def test_gpu_state_dict_round_trip_across_devices(cp, cls, kw):
    ref_ps, _ = _run(cls, kw, np, np.float64, 6, 1)
    gpu_ps, gpu_opt = _run(cls, kw, cp, np.float64, 3, 1)
    sd = gpu_opt.state_dict()
    assert all(isinstance(v, cp.ndarray) for st in sd["state"] for v in st.values() if not np.isscalar(v))
    cpu_ps = [ck.Parameter(p.data.get()) for p in gpu_ps]
    cpu_opt = cls(_groups(cpu_ps, True), **kw)
    cpu_opt.load_state_dict(sd)
    back_ps = [ck.Parameter(cp.asarray(p.data)) for p in cpu_ps]
    back = cls(_groups(back_ps, True), **kw)
    back.load_state_dict(cpu_opt.state_dict())
    for t in range(3, 6):
        for p, g in zip(back_ps, _grads(t, np.float64)):
            p.grad[...] = cp.asarray(g)
        back.step()
    assert back.skipped_steps == 1
    for b, r in zip(back_ps, ref_ps):
        np.testing.assert_allclose(b.data.get(), r.data, rtol=1e-6, atol=1e-6)


@needs_cuda
def test_gpu_clip_grad_norm_matches_cpu(cp):
    cpu, dev = _twin_params(cp, np.float64)
    norm = ck.optim.clip_grad_norm_(cpu, 1.0)
    dnorm = ck.optim.clip_grad_norm_(dev, 1.0)
    assert float(dnorm) == pytest.approx(norm, rel=1e-12)
    for p, q in zip(cpu, dev):
        np.testing.assert_allclose(q.grad.get(), p.grad, rtol=1e-12, atol=1e-15)


def test_control_block_bindings_exist_exactly_when_built_with_cuda():
    from cnnkit import _C
    assert _C.optim_ctl_layout == {"sumsq": 0, "finite": 1, "skipped": 2, "group0": 3, "per_group": 2}
    assert hasattr(_C, "optim_ctl_finish_cuda") == bool(ck.build_info()["cuda"])
    # the per-step scalars' one home, as the CPU path calls them (torch's expressions, in double)
    lr, b1, b2, t = 1e-3, 0.9, 0.999, 3.0
    assert _C.adam_scalars(lr, b1, b2, t) == (-(lr / (1 - b1 ** t)), (1 - b2 ** t) ** 0.5)
    assert _C.adagrad_clr(0.1, 0.05, 4.0) == 0.1 / (1 + 3.0 * 0.05)
    assert _C.clip_coef(1.0, 16.0) == 1.0 / (4.0 + 1e-6) and _C.clip_coef(10.0, 16.0) == 1.0
