"""Argument checks shared by every kernel binding (csrc/bind/common.h) and the ops wrappers (cnnkit.ops):
dtypes compared by value, buffer alignment, out= aliasing and real-bool flags."""
import pickle

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import _C, _validate
from cnnkit import data as D
from cnnkit import ops


def _pickled(a):
    """`a` after a pickle round trip: equal dtype, but a dtype object that is not numpy's cached one."""
    b = pickle.loads(pickle.dumps(a))
    assert b.dtype == a.dtype
    return b


# ---------------------------------------------------------------- dtypes compare by value


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pickled_arrays_go_through_every_kernel_family(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    px, pw = _pickled(x), _pickled(w)

    np.testing.assert_array_equal(ops.conv2d_fwd(px, pw, _pickled(np.ones(4, dtype))),
                                  ops.conv2d_fwd(x, w, np.ones(4, dtype)))
    dy = rng.standard_normal((2, 4, 4, 4)).astype(dtype)
    np.testing.assert_array_equal(ops.conv2d_bwd_data(_pickled(dy), pw, x.shape), ops.conv2d_bwd_data(dy, w, x.shape))
    np.testing.assert_array_equal(ops.conv2d_bwd_weight(_pickled(dy), px, w.shape),
                                  ops.conv2d_bwd_weight(dy, x, w.shape))
    np.testing.assert_array_equal(ops.conv2d_bwd_bias(_pickled(dy)), ops.conv2d_bwd_bias(dy))

    a, b = rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal((5, 2)).astype(dtype)
    np.testing.assert_allclose(ops.matmul(_pickled(a), _pickled(b)), a @ b, rtol=1e-5)

    np.testing.assert_array_equal(ops.relu_fwd(px), np.maximum(x, 0))
    np.testing.assert_array_equal(ops.relu_bwd(px, _pickled(np.maximum(x, 0))), np.where(x > 0, x, 0))

    y, idx = ops.maxpool2d_fwd(px, 2)
    np.testing.assert_array_equal(y, x.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    np.testing.assert_array_equal(ops.maxpool2d_bwd(_pickled(y), _pickled(idx), x.shape),
                                  ops.maxpool2d_bwd(y, idx, x.shape))

    yd, mask = ops.dropout_fwd(px, 0.5, seed=3)
    np.testing.assert_array_equal((yd, mask), ops.dropout_fwd(x, 0.5, seed=3))
    np.testing.assert_array_equal(ops.dropout_bwd(_pickled(yd), _pickled(mask), 0.5), ops.dropout_bwd(yd, mask, 0.5))

    mean, var = ops.batchnorm_stats(px)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, x.var(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    alpha, beta = np.full(3, 2, dtype), np.full(3, 1, dtype)
    np.testing.assert_array_equal(ops.channel_affine(px, _pickled(alpha), _pickled(beta)), x * 2 + 1)
    invstd = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    ref = ops.batchnorm_bwd(x, x, mean, invstd)
    got = ops.batchnorm_bwd(px, px, _pickled(mean), _pickled(invstd), weight=_pickled(np.ones(3, dtype)))
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-6)


def test_pickled_arrays_through_direct_bindings():
    x = _pickled(np.zeros((1, 1, 4, 4), np.float32))
    y = np.empty((2, 1, 2, 2), np.float32).reshape(1, 2, 2, 2)
    _C.conv2d_fwd(x, _pickled(np.ones((2, 1, 3, 3), np.float32)), None, y, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_array_equal(y, 0)
    keys = _pickled(np.zeros(4, np.uint64))
    _C.philox_keys(keys, 1, 0, 0)
    assert keys.any()


@pytest.mark.parametrize("cls, kw", [(ck.optim.SGD, dict(lr=0.5)), (ck.optim.SGD, dict(lr=0.5, momentum=0.9)),
                                     (ck.optim.Adam, dict(lr=0.1))])
def test_pickled_parameter_takes_an_optimizer_step(cls, kw):
    p = ck.Parameter(_pickled(np.array([1.0, -2.0, 3.0], np.float32)))
    opt = cls([p], **kw)
    p.grad[...] = _pickled(np.array([1.0, 1.0, -1.0], np.float32))
    opt.step()
    if cls is ck.optim.SGD:
        np.testing.assert_allclose(p.data, [0.5, -2.5, 3.5], rtol=1e-6)
    else:
        np.testing.assert_allclose(p.data, [0.9, -2.1, 3.1], rtol=1e-5)


def test_pickled_batch_goes_through_augment():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    np.testing.assert_array_equal(D.RandomHorizontalFlip(1.0)(_pickled(x)), x[:, :, :, ::-1])
    y = D.RandomCrop(4, padding=0)(_pickled(x), seed=1)
    np.testing.assert_array_equal(y, x)


# ---------------------------------------------------------------- misaligned buffers are refused


def _misaligned(shape, dtype, fill=0.0):
    """A C-contiguous array whose data starts one byte past an element boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    a = np.frombuffer(bytearray(dtype.itemsize * n + 1), dtype, count=n, offset=1).reshape(shape)
    assert a.flags.c_contiguous and not a.flags.aligned
    return a


def _raises_misaligned(name, dtype, fn, *args, **kwargs):
    size = np.dtype(dtype).itemsize
    with pytest.raises(ValueError, match=rf"\b{name} must be aligned to {size} bytes \({np.dtype(dtype)}\)"):
        fn(*args, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_misaligned_inputs_and_outputs_are_refused_by_every_op(dtype):
    x, w = np.ones((1, 2, 4, 4), dtype), np.ones((3, 2, 3, 3), dtype)
    bad = _misaligned
    _raises_misaligned("x", dtype, ops.conv2d_fwd, bad(x.shape, dtype), w)
    _raises_misaligned("w", dtype, ops.conv2d_fwd, x, bad(w.shape, dtype))
    _raises_misaligned("b", dtype, ops.conv2d_fwd, x, w, bad((3,), dtype))
    _raises_misaligned("y", dtype, ops.conv2d_fwd, x, w, out=bad((1, 3, 2, 2), dtype))
    dy = np.ones((1, 3, 2, 2), dtype)
    _raises_misaligned("dy", dtype, ops.conv2d_bwd_data, bad(dy.shape, dtype), w, x.shape)
    _raises_misaligned("x", dtype, ops.conv2d_bwd_weight, dy, bad(x.shape, dtype), w.shape)
    _raises_misaligned("db", dtype, ops.conv2d_bwd_bias, dy, out=bad((3,), dtype))

    a = np.ones((2, 3), dtype)
    _raises_misaligned("a", dtype, ops.matmul, bad((2, 3), dtype), a.T.copy())
    _raises_misaligned("out", dtype, ops.matmul, a, a.T.copy(), out=bad((2, 2), dtype))

    _raises_misaligned("x", dtype, ops.relu_fwd, bad(x.shape, dtype))
    _raises_misaligned("y", dtype, ops.relu_bwd, x, bad(x.shape, dtype))

    _raises_misaligned("x", dtype, ops.maxpool2d_fwd, bad(x.shape, dtype), 2)
    y, idx = ops.maxpool2d_fwd(x, 2)
    _raises_misaligned("indices", np.int64, ops.maxpool2d_bwd, y, bad(idx.shape, np.int64), x.shape)

    _raises_misaligned("x", dtype, ops.dropout_fwd, bad(x.shape, dtype), 0.5, seed=1)

    _raises_misaligned("x", dtype, ops.batchnorm_stats, bad(x.shape, dtype))
    _raises_misaligned("alpha", dtype, ops.channel_affine, x, bad((2,), dtype), np.ones(2, dtype))
    _raises_misaligned("invstd", dtype, ops.batchnorm_bwd, x, x, np.ones(2, dtype), bad((2,), dtype))


def test_misaligned_buffers_are_refused_by_direct_bindings():
    f32 = np.float32
    p, g = np.ones(4, f32), np.ones(4, f32)
    _raises_misaligned("p", f32, _C.sgd_step, _misaligned((4,), f32), g, None, -0.1, 0.0, 1.0, False, True,
                       1.0, 0.0, 0.0, 0.0)
    _raises_misaligned("g", f32, _C.grad_sumsq, _misaligned((4,), f32))
    _raises_misaligned("exp_avg", f32, _C.adam_step, p, g, _misaligned((4,), f32), np.zeros(4, f32), None,
                       0.9, 0.999, 1e-8, -0.1, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    _raises_misaligned("keys", np.uint64, _C.philox_keys, _misaligned((4,), np.uint64), 1, 0, 0)
    x = _misaligned((2, 1, 4, 4), f32)
    y, ids = np.empty((2, 1, 4, 4), f32), np.arange(2, dtype=np.int64)
    stage = (1, 0, [1.0, 0, 0, 0, 0, 0], 4, 4, None, None)   # a horizontal flip, p = 1
    _raises_misaligned("x", f32, _C.aug_pipeline, x, y, ids, [stage], 1, 0, 1, None)
    # the same arguments, aligned, run: the refusal is the alignment and nothing else
    _C.aug_pipeline(x.copy(), y, ids, [stage], 1, 0, 1, None)
    np.testing.assert_array_equal(y, 0)


def test_misaligned_batch_is_refused_by_augment():
    x = _misaligned((2, 1, 4, 4), np.float32)
    _raises_misaligned("x", np.float32, D.RandomHorizontalFlip(1.0), x)
    _raises_misaligned("x", np.float32, D.RandomCrop(4), x, seed=1)


def test_misaligned_device_arrays_are_refused_by_the_device_checks(monkeypatch):
    # the device-side check every cnnkit.ops function runs on each CuPy array before a pointer is passed on
    from helpers import fakecupy
    cp = fakecupy.install(monkeypatch)
    x = fakecupy.ndarray(_misaligned((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"relu_fwd: x must be aligned to 4 bytes \(float32\), got a device address "
                                         r"1 byte\(s\) past a multiple of 4"):
        ops.relu_fwd(x)
    a = cp.asarray(np.ones((2, 2), np.float64))
    with pytest.raises(ValueError, match=r"matmul: out must be aligned to 8 bytes \(float64\)"):
        ops.matmul(a, a, out=fakecupy.ndarray(_misaligned((2, 2), np.float64)))
    good = cp.asarray(np.ones((1, 1, 4, 4), np.float32))
    assert _validate.first_array("relu_fwd", "x", good) == _validate.Ref("x", 0)


# ---------------------------------------------------------------- out= must not alias an input


def _raises_alias(name, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=rf"\bout must not share memory with {name}\b"):
        fn(*args, **kwargs)


def test_out_aliasing_an_input_is_refused():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 3, 3))
    w1 = rng.standard_normal((2, 2, 1, 1))
    _raises_alias("x", ops.conv2d_fwd, x, w1, out=x)
    _raises_alias("w", ops.conv2d_fwd, np.ones((1, 2, 1, 2)), w1, out=w1.reshape(1, 2, 1, 2))
    b = np.zeros(18 + 2)
    _raises_alias("b", ops.conv2d_fwd, x, w1, b[18:], out=b[2:].reshape(1, 2, 3, 3))
    dy = rng.standard_normal((1, 2, 3, 3))
    _raises_alias("dy", ops.conv2d_bwd_data, dy, w1, dy.shape, out=dy)
    x8, dy4 = rng.standard_normal((1, 2, 2, 2)), rng.standard_normal((1, 4, 2, 2))
    _raises_alias("x", ops.conv2d_bwd_weight, dy4, x8, (4, 2, 1, 1), out=x8.reshape(4, 2, 1, 1))
    _raises_alias("dy", ops.conv2d_bwd_weight, dy4, x8, (4, 2, 1, 1), out=dy4.reshape(-1)[:8].reshape(4, 2, 1, 1),
                  accumulate=True)
    _raises_alias("dy", ops.conv2d_bwd_bias, dy4, out=dy4.reshape(-1)[:4])

    a, bm = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    _raises_alias("a", ops.matmul, a, bm, out=a)
    _raises_alias("b", ops.matmul, a, bm, out=bm, accumulate=True)
    buf = rng.standard_normal(12)   # a partial overlap: out starts three elements into a
    _raises_alias("a", ops.matmul, buf[:9].reshape(3, 3), bm, out=buf[3:].reshape(3, 3))

    ab = np.ones(18)
    _raises_alias("alpha", ops.channel_affine, ab.reshape(1, 2, 3, 3), ab[:2], np.zeros(2), out=ab.reshape(1, 2, 3, 3))


def test_refused_alias_leaves_out_untouched():
    a = np.arange(9.0).reshape(3, 3)
    before = a.copy()
    _raises_alias("a", ops.matmul, a, np.eye(3) * 2, out=a)
    np.testing.assert_array_equal(a, before)


def test_elementwise_ops_may_work_in_place_but_not_on_a_shifted_overlap():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 4))
    ref = np.maximum(x, 0)
    y = x.copy()
    assert ops.relu_fwd(y, out=y) is y
    np.testing.assert_array_equal(y, ref)
    dy = rng.standard_normal(x.shape)
    want = np.where(ref > 0, dy, 0)
    d = dy.copy()
    np.testing.assert_array_equal(ops.relu_bwd(d, ref, out=d), want)
    r = ref.copy()
    np.testing.assert_array_equal(ops.relu_bwd(dy, r, out=r), want)
    z = x.copy()
    np.testing.assert_array_equal(ops.channel_affine(z, np.full(3, 2.0), np.ones(3), out=z), x * 2 + 1)

    buf = rng.standard_normal(x.size + 1)
    with pytest.raises(ValueError, match=r"relu_fwd: out must not share memory with x .*may be x itself"):
        ops.relu_fwd(buf[:-1].reshape(x.shape), out=buf[1:].reshape(x.shape))


def test_device_ops_refuse_out_aliasing_an_input(monkeypatch):
    # the checks run in cnnkit.ops for either device; the stand-in routes only the kernels behind them
    from helpers import fakecupy
    dev_matmul, dev_conv, dev_relu = ops.matmul, ops.conv2d_fwd, ops.relu_fwd
    cp = fakecupy.install(monkeypatch)
    a = cp.asarray(np.ones((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"matmul: out must not share memory with a\b"):
        dev_matmul(a, cp.asarray(np.ones((3, 3), np.float32)), out=a)
    x = cp.asarray(np.ones((1, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"conv2d_fwd: out must not share memory with x\b"):
        dev_conv(x, cp.asarray(np.ones((2, 2, 1, 1), np.float32)), out=x)
    buf = cp.asarray(np.ones(10, np.float32))
    with pytest.raises(ValueError, match=r"relu_fwd: out must not share memory with x\b"):
        dev_relu(buf[:9], out=buf[1:])


# ---------------------------------------------------------------- flags must be real bools


def _raises_flag(op, name, fn, *args, **kwargs):
    with pytest.raises(TypeError, match=rf"{op}: {name} must be a bool, got str"):
        fn(*args, **kwargs)


def test_string_flags_are_refused_by_every_op():
    x, dy = np.ones((1, 2, 3, 3)), np.ones((1, 2, 3, 3))
    w = np.ones((2, 2, 1, 1))
    dw = np.zeros_like(w)
    _raises_flag("conv2d_bwd_weight", "accumulate", ops.conv2d_bwd_weight, dy, x, w.shape, out=dw, accumulate="no")
    np.testing.assert_array_equal(dw, 0)   # refused before anything is written
    _raises_flag("conv2d_bwd_bias", "accumulate", ops.conv2d_bwd_bias, dy, out=np.zeros(2), accumulate="no")
    _raises_flag("maxpool2d_fwd", "ceil_mode", ops.maxpool2d_fwd, x, 2, ceil_mode="no")
    a = np.ones((2, 2))
    out = np.full((2, 2), 5.0)
    _raises_flag("matmul", "accumulate", ops.matmul, a, a, out=out, accumulate="no")
    np.testing.assert_array_equal(out, 5.0)
    _raises_flag("matmul", "trans_a", ops.matmul, a, a, trans_a="False")
    _raises_flag("matmul", "trans_b", ops.matmul, a, a, trans_b="")
    m, s = np.zeros(2), np.ones(2)
    _raises_flag("batchnorm_bwd", "train", ops.batchnorm_bwd, dy, x, m, s, train="no")
    _raises_flag("batchnorm_bwd", "need_dx", ops.batchnorm_bwd, dy, x, m, s, need_dx="no")
    with pytest.raises(TypeError, match="matmul: accumulate must be a bool, got int"):
        ops.matmul(a, a, out=out, accumulate=1)


def test_real_bools_and_numpy_bools_are_taken():
    a = np.arange(4.0).reshape(2, 2)
    out = np.ones((2, 2))
    ops.matmul(a, a, trans_a=np.bool_(True), out=out, accumulate=np.bool_(True))
    np.testing.assert_array_equal(out, a.T @ a + 1)
    np.testing.assert_array_equal(ops.matmul(a, a, trans_b=True), a @ a.T)


def test_string_flags_are_refused_by_the_device_ops(monkeypatch):
    from helpers import fakecupy
    from cnnkit.ops import _cuda as _cuda_ops, optim_steps
    # the ops check their flags in cnnkit.ops for either device, the optimizer steps in ops.optim_steps for a
    # device, grad_sumsq_device in ops._cuda itself
    dev = {n: getattr(ops, n) for n in ("matmul", "conv2d_bwd_weight", "conv2d_bwd_bias", "maxpool2d_fwd")}
    dev.update(sgd_step=optim_steps.sgd_step, grad_sumsq_device=_cuda_ops.grad_sumsq_device)
    cp = fakecupy.install(monkeypatch)
    a = cp.asarray(np.ones((2, 2), np.float32))
    _raises_flag("matmul", "accumulate", dev["matmul"], a, a, out=cp.asarray(np.ones((2, 2), np.float32)),
                 accumulate="no")
    _raises_flag("matmul", "trans_a", dev["matmul"], a, a, trans_a="no")
    x = cp.asarray(np.ones((1, 2, 3, 3), np.float32))
    _raises_flag("conv2d_bwd_weight", "accumulate", dev["conv2d_bwd_weight"], x, x, (2, 2, 1, 1),
                 out=cp.asarray(np.zeros((2, 2, 1, 1), np.float32)), accumulate="no")
    _raises_flag("conv2d_bwd_bias", "accumulate", dev["conv2d_bwd_bias"], x, out=cp.asarray(np.zeros(2, np.float32)),
                 accumulate="no")
    _raises_flag("maxpool2d_fwd", "ceil_mode", dev["maxpool2d_fwd"], x, 2, ceil_mode="no")
    g = cp.asarray(np.ones(3, np.float32))
    _raises_flag("sgd_step", "nesterov", dev["sgd_step"], cp.asarray(np.ones(3, np.float32)), g, None, -0.1, 0.0,
                 1.0, "no", True, 1.0, 0.0, 0.0, 0.0)
    _raises_flag("sgd_step", "first", dev["sgd_step"], cp.asarray(np.ones(3, np.float32)), g, None, -0.1, 0.0,
                 1.0, False, "no", 1.0, 0.0, 0.0, 0.0)
    _raises_flag("grad_sumsq", "accumulate", dev["grad_sumsq_device"], g,
                 out=cp.asarray(np.zeros(8, np.float64)), accumulate="no")


# ---------------------------------------------------------------- augment: one op for both devices


@pytest.mark.parametrize("on_device", [False, True], ids=["cpu", "stand-in"])
def test_augment_op_checks_its_arrays_alike_on_either_device(monkeypatch, on_device):
    from cnnkit.ops.augment import aug_pipeline
    from helpers import fakecupy
    to = fakecupy.install(monkeypatch).asarray if on_device else np.asarray
    x = to(np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4))
    stage = (1, 0, [1.0, 0, 0, 0, 0, 0], 4, 4, None, None)   # a horizontal flip, p = 1
    y = aug_pipeline(x, to(np.arange(2, dtype=np.int64)), [stage], 1, 0)
    assert type(y) is type(x)
    np.testing.assert_array_equal(y.get() if on_device else y, np.arange(32, dtype=np.float32).reshape(2, 1, 4, 4)[..., ::-1])
    with pytest.raises(ValueError, match=r"augment: ids must have shape \(2,\) \(one index per sample\), got \(3,\)"):
        aug_pipeline(x, to(np.arange(3, dtype=np.int64)), [stage], 1, 0)
    with pytest.raises(TypeError, match=r"augment: ids must have dtype int64 \(no silent casts\), got int32"):
        aug_pipeline(x, to(np.arange(2, dtype=np.int32)), [stage], 1, 0)
    with pytest.raises(ValueError, match=r"augment: records must have shape \(2, 16\), got \(2, 8\)"):
        aug_pipeline(x, to(np.arange(2, dtype=np.int64)), [stage], 1, 0, records=to(np.zeros((2, 8))))
    with pytest.raises(ValueError, match=r"augment: stages must not be empty"):
        aug_pipeline(x, to(np.arange(2, dtype=np.int64)), [], 1, 0)


# ---------------------------------------------------------------- fused optimizer steps on a device


def test_device_optimizer_steps_are_checked_by_the_op(monkeypatch):
    # The CUDA step kernels get raw pointers and g's element count: cnnkit.ops.optim_steps checks every array
    # a launch touches (size, dtype, device) and the control block's size before ops._cuda launches it
    from cnnkit.ops import optim_steps as S
    from helpers import fakecupy
    cp = fakecupy.install(monkeypatch)
    inf = float("inf")

    def f(n, dtype=np.float32):
        return cp.asarray(np.ones(n, dtype))
    with pytest.raises(ValueError, match=r"sgd_step: p must have 4 elements \(as g\), got 3"):
        S.sgd_step(f(3), f(4), None, -0.1, 0.0, 1.0, False, True, 1.0, inf, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"sgd_step: momentum_buffer is required when momentum != 0"):
        S.sgd_step(f(4), f(4), None, -0.1, 0.9, 1.0, False, True, 1.0, inf, 0.0, 0.0)
    with pytest.raises(TypeError, match=r"sgd_step: mixed devices: g is a cupy\.ndarray \(GPU\) but p is a numpy"):
        S.sgd_step(np.ones(4, np.float32), f(4), None, -0.1, 0.0, 1.0, False, True, 1.0, inf, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"sgd_step: group must be >= 0, got -1"):
        S.sgd_step(f(4), f(4), None, -0.1, 0.0, 1.0, False, True, 1.0, inf, 0.0, 0.0, ctl=f(8, np.float64), group=-1)
    with pytest.raises(ValueError, match=r"adagrad_step: ctl must have at least 5 elements for 1 group\(s\), got 4"):
        S.adagrad_step(f(4), f(4), f(4), -0.1, 1e-10, 1.0, inf, 0.0, 0.0, ctl=f(4, np.float64))
    with pytest.raises(TypeError, match=r"adagrad_step: ctl must have dtype float64 \(no silent casts\), got float32"):
        S.adagrad_step(f(4), f(4), f(4), -0.1, 1e-10, 1.0, inf, 0.0, 0.0, ctl=f(8))
    with pytest.raises(ValueError, match=r"rmsprop_step: momentum_buffer is required when momentum > 0"):
        S.rmsprop_step(f(4), f(4), f(4), None, None, -0.1, 0.99, 1e-8, 0.9, 1.0, inf, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"rmsprop_step: grad_avg must have 4 elements \(as g\), got 5"):
        S.rmsprop_step(f(4), f(4), f(4), f(5), None, -0.1, 0.99, 1e-8, 0.0, 1.0, inf, 0.0, 0.0)
    with pytest.raises(TypeError, match=r"adam_step: exp_avg_sq must have dtype float32 \(no silent casts\)"):
        S.adam_step(f(4), f(4), f(4), f(4, np.float64), None, 0.9, 0.999, 1e-8, -1e-3, 1.0, 1.0, 1.0, inf, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"adam_step: max_exp_avg_sq must have 4 elements \(as g\), got 2"):
        S.adam_step(f(4), f(4), f(4), f(4), f(2), 0.9, 0.999, 1e-8, -1e-3, 1.0, 1.0, 1.0, inf, 0.0, 0.0)
    # checked arrays do run (through the stand-in's routing to the CPU kernel)
    p = f(4)
    S.sgd_step(p, f(4), None, -0.5, 0.0, 1.0, False, True, 1.0, inf, 0.0, 0.0)
    np.testing.assert_array_equal(p.get(), 0.5)
    # numpy arrays go to the CPU binding, which checks them itself, with its own messages
    a = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="exp_avg must have 8 elements"):
        S.adam_step(a, a.copy(), np.ones(7, np.float32), a.copy(), None, 0.9, 0.999, 1e-8, -1e-3, 1.0, 1.0, 1.0, inf,
                    0.0, 0.0)


def test_gpu_step_launchers_do_no_checks_of_their_own():
    # ops/_cuda.py's step functions only turn arrays into pointers and launch: no check, no raise
    import ast
    import inspect
    from cnnkit.ops import _cuda
    for name in ("sgd_step", "adagrad_step", "rmsprop_step", "adam_step"):
        tree = ast.parse(inspect.getsource(getattr(_cuda, name)))
        called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert called <= {"_on", "_ptr", "_code", "_stream"}, (name, called)
        assert not any(isinstance(n, ast.Raise) for n in ast.walk(tree)), name
