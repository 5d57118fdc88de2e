# conv2d: bad inputs (ops layer and _C directly), forward / backward-data / backward-weight / bias against
# the numpy reference over random shapes (hypothesis), hand-worked 3x3 cases, float64 central differences,
# N=0, out= and accumulate=, huge-but-empty problems that must not kill the process, and PyTorch as oracle.
# Tests taking `device` run on the CPU, the CuPy stand-in and a GPU (tests/ops/conftest.py).
import math

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies as st

import cnnkit
from cnnkit import _C, ops

from helpers import reference as R

F32, F64 = np.float32, np.float64


def _x(*shape, dtype=F64):
    return np.arange(math.prod(shape), dtype=dtype).reshape(shape) / 7 - 1


X4 = _x(2, 4, 5, 5)
W4 = _x(6, 2, 3, 3)
DY = np.zeros((2, 6, 3, 3))  # X4 * W4 with groups=2 gives (2, 6, 3, 3)
RO = np.zeros((2, 6, 3, 3))
RO.flags.writeable = False
X32 = X4.astype(F32)
RO_W = np.zeros(W4.shape)
RO_W.flags.writeable = False
RO_X = np.zeros(X4.shape)
RO_X.flags.writeable = False


# ---------------------------------------------------------------- 1. bad inputs

BAD = [
    # conv2d_fwd: types and dtypes
    ("x-list", lambda: ops.conv2d_fwd(X4.tolist(), W4, groups=2), TypeError, r"conv2d_fwd: x must be a numpy\.ndarray, got list"),
    ("x-int", lambda: ops.conv2d_fwd(X4.astype(np.int32), W4, groups=2), TypeError, r"conv2d_fwd: x must be float32 or float64, got int32"),
    ("x-f16", lambda: ops.conv2d_fwd(X4.astype(np.float16), W4, groups=2), TypeError, r"conv2d_fwd: x must be float32 or float64, got float16"),
    ("mixed-x32-w64", lambda: ops.conv2d_fwd(X32, W4, groups=2), TypeError, r"conv2d_fwd: w must have the dtype of x \(float32.*got float64"),
    ("b-f64-for-f32", lambda: ops.conv2d_fwd(X32, W4.astype(F32), np.zeros(6), groups=2), TypeError, r"conv2d_fwd: b must have dtype float32"),
    # shapes
    ("x-3d", lambda: ops.conv2d_fwd(X4[0], W4, groups=2), ValueError, r"conv2d_fwd: x must be 4-D, got shape \(4, 5, 5\)"),
    ("w-5d", lambda: ops.conv2d_fwd(X4, W4[None], groups=2), ValueError, r"conv2d_fwd: w must be 4-D"),
    ("b-2d", lambda: ops.conv2d_fwd(X4, W4, np.zeros((6, 1)), groups=2), ValueError, r"conv2d_fwd: b must be 1-D"),
    ("b-wrong-len", lambda: ops.conv2d_fwd(X4, W4, np.zeros(5), groups=2), ValueError, r"conv2d_fwd: b must have shape \(6,\), got \(5,\)"),
    ("channels-mismatch", lambda: ops.conv2d_fwd(X4, W4), ValueError, r"conv2d_fwd: w\.shape\[1\] must be C/groups = 4, got 2"),
    ("groups-not-divide-C", lambda: ops.conv2d_fwd(_x(1, 3, 5, 5), _x(6, 1, 3, 3), groups=2), ValueError, r"conv2d_fwd: in-channels C=3 must be divisible by groups=2"),
    ("groups-not-divide-K", lambda: ops.conv2d_fwd(_x(1, 3, 5, 5), _x(4, 1, 3, 3), groups=3), ValueError, r"conv2d_fwd: out-channels K=4 must be divisible by groups=3"),
    ("groups-0", lambda: ops.conv2d_fwd(X4, W4, groups=0), ValueError, r"conv2d_fwd: groups must be >= 1, got 0"),
    ("groups-float", lambda: ops.conv2d_fwd(X4, W4, groups=2.0), TypeError, r"conv2d_fwd: groups must be an int, got float"),
    # hyperparameters
    ("stride-0", lambda: ops.conv2d_fwd(X4, W4, stride=0, groups=2), ValueError, r"conv2d_fwd: stride must be >= 1, got 0"),
    ("stride-neg-w", lambda: ops.conv2d_fwd(X4, W4, stride=(1, -2), groups=2), ValueError, r"conv2d_fwd: stride must be >= 1, got \(1, -2\)"),
    ("stride-float", lambda: ops.conv2d_fwd(X4, W4, stride=1.5, groups=2), TypeError, r"conv2d_fwd: stride must be an int, got float"),
    ("stride-triple", lambda: ops.conv2d_fwd(X4, W4, stride=(1, 1, 1), groups=2), ValueError, r"conv2d_fwd: stride must be an int or a pair"),
    ("dilation-0", lambda: ops.conv2d_fwd(X4, W4, dilation=0, groups=2), ValueError, r"conv2d_fwd: dilation must be >= 1, got 0"),
    ("padding-neg", lambda: ops.conv2d_fwd(X4, W4, padding=-1, groups=2), ValueError, r"conv2d_fwd: padding must be >= 0, got -1"),
    ("padding-huge", lambda: ops.conv2d_fwd(X4, W4, padding=2**62, groups=2), ValueError, r"conv2d_fwd: padding must be < 2\*\*62"),
    ("kernel-too-big", lambda: ops.conv2d_fwd(_x(1, 1, 2, 2), _x(1, 1, 3, 3)), ValueError, r"conv2d_fwd: kernel \(3, 3\) with dilation is larger than the padded input \(2, 2\)"),
    ("dilated-kernel-too-big", lambda: ops.conv2d_fwd(_x(1, 1, 5, 5), _x(1, 1, 3, 3), dilation=3, padding=0), ValueError, r"conv2d_fwd: kernel \(7, 7\) with dilation is larger"),
    ("dilation-wraps-int64", lambda: ops.conv2d_fwd(_x(1, 1, 1, 1), _x(1, 1, 8, 1), dilation=((2**63 - 1) // 7, 1)), ValueError, r"conv2d_fwd: kernel \(9223372036854775808, 1\) with dilation is larger"),
    ("padding-wraps-int64", lambda: ops.conv2d_fwd(_x(1, 1, 2, 2), _x(1, 1, 1, 1), padding=2**62 - 1), ValueError, r"conv2d_fwd: the padded input .* must be < 2\*\*63"),
    ("output-too-big", lambda: ops.conv2d_fwd(_x(1, 1, 1, 1), _x(1, 1, 1, 1), padding=2**61), ValueError, r"conv2d_fwd: (out would have shape|size overflows)"),
    # layout and out=
    ("x-noncontig", lambda: ops.conv2d_fwd(_x(2, 4, 5, 10)[..., ::2], W4, groups=2), ValueError, r"conv2d_fwd: x must be C-contiguous"),
    ("w-fortran", lambda: ops.conv2d_fwd(X4, np.asfortranarray(W4), groups=2), ValueError, r"conv2d_fwd: w must be C-contiguous"),
    ("out-noncontig", lambda: ops.conv2d_fwd(X4, W4, groups=2, out=np.zeros((2, 6, 3, 6))[..., ::2]), ValueError, r"conv2d_fwd: out must be C-contiguous"),
    ("out-readonly", lambda: ops.conv2d_fwd(X4, W4, groups=2, out=RO), ValueError, r"conv2d_fwd: out must be writable"),
    ("out-wrong-shape", lambda: ops.conv2d_fwd(X4, W4, groups=2, out=np.zeros((2, 6, 3, 4))), ValueError, r"conv2d_fwd: out must have shape \(2, 6, 3, 3\)"),
    ("out-wrong-dtype", lambda: ops.conv2d_fwd(X4, W4, groups=2, out=np.zeros((2, 6, 3, 3), F32)), TypeError, r"conv2d_fwd: out must have dtype float64"),
    # conv2d_bwd_data
    ("bwd-data-dy-shape", lambda: ops.conv2d_bwd_data(np.zeros((2, 6, 3, 4)), W4, X4.shape, groups=2), ValueError, r"conv2d_bwd_data: dy must have shape \(2, 6, 3, 3\)"),
    ("bwd-data-mixed", lambda: ops.conv2d_bwd_data(DY, W4.astype(F32), X4.shape, groups=2), TypeError, r"conv2d_bwd_data: w must have the dtype of dy"),
    ("bwd-data-xshape-3", lambda: ops.conv2d_bwd_data(DY, W4, (2, 4, 5), groups=2), ValueError, r"conv2d_bwd_data: x_shape must be a 4-tuple"),
    ("bwd-data-xshape-neg", lambda: ops.conv2d_bwd_data(DY, W4, (2, 4, -5, 5), groups=2), ValueError, r"conv2d_bwd_data: x_shape must be >= 0"),
    ("bwd-data-xshape-float", lambda: ops.conv2d_bwd_data(DY, W4, (2, 4, 5.0, 5), groups=2), TypeError, r"conv2d_bwd_data: x_shape must be an int"),
    ("bwd-data-huge", lambda: ops.conv2d_bwd_data(DY, W4, (2**40, 2**40, 1, 1)), ValueError, r"conv2d_bwd_data: x_shape .* too many"),
    ("bwd-data-huge-plane", lambda: ops.conv2d_bwd_data(DY, _x(6, 1, 1, 1), (0, 1, 2**31, 2**31)), ValueError, r"conv2d_bwd_data: (a plane|x_shape)"),
    ("bwd-data-out-readonly", lambda: ops.conv2d_bwd_data(DY, W4, X4.shape, groups=2, out=RO_X), ValueError, r"conv2d_bwd_data: out must be writable"),
    ("bwd-data-stride-0", lambda: ops.conv2d_bwd_data(DY, W4, X4.shape, stride=(0, 1), groups=2), ValueError, r"conv2d_bwd_data: stride must be >= 1"),
    # conv2d_bwd_weight
    ("bwd-weight-dy-shape", lambda: ops.conv2d_bwd_weight(np.zeros((2, 6, 4, 3)), X4, W4.shape, groups=2), ValueError, r"conv2d_bwd_weight: dy must have shape \(2, 6, 3, 3\)"),
    ("bwd-weight-mixed", lambda: ops.conv2d_bwd_weight(DY, X32, W4.shape, groups=2), TypeError, r"conv2d_bwd_weight: x must have the dtype of dy"),
    ("bwd-weight-accumulate-no-out", lambda: ops.conv2d_bwd_weight(DY, X4, W4.shape, groups=2, accumulate=True), ValueError, r"conv2d_bwd_weight: accumulate=True needs out="),
    ("bwd-weight-out-noncontig", lambda: ops.conv2d_bwd_weight(DY, X4, W4.shape, groups=2, out=np.zeros((6, 2, 3, 6))[..., ::2]), ValueError, r"conv2d_bwd_weight: out must be C-contiguous"),
    ("bwd-weight-out-readonly", lambda: ops.conv2d_bwd_weight(DY, X4, W4.shape, groups=2, out=RO_W), ValueError, r"conv2d_bwd_weight: out must be writable"),
    ("bwd-weight-huge", lambda: ops.conv2d_bwd_weight(DY, X4, (2**31, 2**31, 2**31, 1)), ValueError, r"conv2d_bwd_weight: w_shape .* too many"),
    ("bwd-weight-dilation-neg", lambda: ops.conv2d_bwd_weight(DY, X4, W4.shape, dilation=-1, groups=2), ValueError, r"conv2d_bwd_weight: dilation must be >= 1"),
    # conv2d_bwd_bias
    ("bwd-bias-3d", lambda: ops.conv2d_bwd_bias(DY[0]), ValueError, r"conv2d_bwd_bias: dy must be 4-D"),
    ("bwd-bias-out-shape", lambda: ops.conv2d_bwd_bias(DY, out=np.zeros(5)), ValueError, r"conv2d_bwd_bias: out must have shape \(6,\)"),
]


@pytest.mark.parametrize("call, exc, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# The C++ layer checks again: called directly, bad arguments raise, never crash.
_Y = np.zeros((2, 6, 3, 3))
C_BAD = [
    ("y-wrong-shape", lambda: _C.conv2d_fwd(X4, W4, None, np.zeros((2, 6, 3, 4)), (1, 1), (0, 0), (1, 1), 2), ValueError, r"conv2d_fwd: y must have shape \(2, 6, 3, 3\)"),
    ("y-readonly", lambda: _C.conv2d_fwd(X4, W4, None, RO, (1, 1), (0, 0), (1, 1), 2), ValueError, r"conv2d_fwd: y must be writable"),
    ("x-noncontig", lambda: _C.conv2d_fwd(_x(2, 4, 5, 10)[..., ::2], W4, None, _Y, (1, 1), (0, 0), (1, 1), 2), ValueError, r"conv2d_fwd: x must be C-contiguous"),
    ("x-int", lambda: _C.conv2d_fwd(X4.astype(np.int64), W4, None, _Y, (1, 1), (0, 0), (1, 1), 2), TypeError, r"conv2d_fwd: x must be float32 or float64"),
    ("w-mixed", lambda: _C.conv2d_fwd(X4, W4.astype(F32), None, _Y, (1, 1), (0, 0), (1, 1), 2), TypeError, r"conv2d_fwd: w must have dtype float64"),
    ("b-wrong-len", lambda: _C.conv2d_fwd(X4, W4, np.zeros(3), _Y, (1, 1), (0, 0), (1, 1), 2), ValueError, r"conv2d_fwd: b must have shape \(6,\)"),
    ("stride-0", lambda: _C.conv2d_fwd(X4, W4, None, _Y, (0, 1), (0, 0), (1, 1), 2), ValueError, r"conv2d_fwd: stride must be >= 1"),
    ("padding-neg", lambda: _C.conv2d_bwd_data(DY, W4, np.zeros(X4.shape), (1, 1), (-1, 0), (1, 1), 2), ValueError, r"conv2d_bwd_data: padding must be >= 0"),
    ("groups-mismatch", lambda: _C.conv2d_bwd_weight(DY, X4, np.zeros(W4.shape), (1, 1), (0, 0), (1, 1), 1, False), ValueError, r"conv2d_bwd_weight: w\.shape\[1\] must be C/groups"),
    ("overflow", lambda: _C.conv2d_out_shape([2**40, 1, 2**40, 1], [1, 1, 1, 1], (1, 1), (0, 0), (1, 1), 1), ValueError, r"conv2d: size overflows int64"),
    # dilation * (R - 1) = 2**63 - 1 exactly: the "+ 1" of the effective kernel size must not wrap
    ("dilation-wraps-int64", lambda: _C.conv2d_out_shape([1, 1, 1, 1], [1, 1, 8, 1], (1, 1), (0, 0), ((2**63 - 1) // 7, 1), 1), ValueError, r"conv2d: "),
    ("padding-wraps-int64", lambda: _C.conv2d_out_shape([1, 1, 2, 2], [1, 1, 1, 1], (1, 1), (2**62 - 1, 0), (1, 1), 1), ValueError, r"conv2d: "),
    ("bias-db-shape", lambda: _C.conv2d_bwd_bias(DY, np.zeros(2), False), ValueError, r"conv2d_bwd_bias: db must have shape \(6,\)"),
]


@pytest.mark.parametrize("call, exc, match", [b[1:] for b in C_BAD], ids=[b[0] for b in C_BAD])
def test_C_checks_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# An empty batch (or any problem whose per-thread im2col scratch cannot be allocated) must raise or
# return, never abort: an exception inside an OpenMP region is caught and rethrown after it.
# The child runs under a 6 GiB address-space cap; each call below asks for far more scratch than that.
_HUGE_EMPTY = {
    "fwd-N0": "ops.conv2d_fwd(np.zeros((0, 1024, 1, 1), f), np.zeros((1, 1024, 1, 1), f), padding=(0, 2**29))",
    "bwd_data-N0": "ops.conv2d_bwd_data(np.zeros((0, 1, 1, 2**30 + 1), f), np.zeros((1, 1024, 1, 1), f), "
                   "(0, 1024, 1, 1), padding=(0, 2**29))",
    "bwd_weight-N0": "ops.conv2d_bwd_weight(np.zeros((0, 1, 1, 2**30 + 1), f), np.zeros((0, 1024, 1, 1), f), "
                     "(1, 1024, 1, 1), padding=(0, 2**29))",
    "fwd-N1-scratch": "ops.conv2d_fwd(np.zeros((1, 1024, 1, 1), f), np.zeros((1, 1024, 1, 1), f), padding=(0, 2**19))",
}


@pytest.mark.parametrize("call", list(_HUGE_EMPTY.values()), ids=list(_HUGE_EMPTY))
def test_huge_scratch_does_not_crash(run_isolated, call):
    res = run_isolated(f"""
        import numpy as np
        from cnnkit import ops
        f = np.float32
        try:
            out = {call}
            print("shape", out.shape, float(np.abs(out).max()) if out.size else 0.0)
        except (ValueError, MemoryError) as e:
            print("raised", type(e).__name__, e)
    """)
    assert res.returncode == 0, f"process died (rc={res.returncode}): {res.stderr.strip()[-300:]}"
    assert res.stdout.startswith(("shape", "raised")), res.stdout
    if res.stdout.startswith("shape"):
        assert res.stdout.split(" ", 1)[1].strip().endswith("0.0")  # all inputs are zero


# ---------------------------------------------------------------- 2. forward and backward vs the reference

@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    c = dict(
        N=draw(st.integers(0, 3)), groups=groups,
        C=groups * draw(st.integers(1, 3)), K=groups * draw(st.integers(1, 3)),
        H=draw(st.integers(1, 12)), W=draw(st.integers(1, 12)),
        R=draw(st.integers(1, 5)), S=draw(st.integers(1, 5)),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
        dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        bias=draw(st.booleans()),
        dtype=draw(st.sampled_from([F32, F64])),
        magnitude=draw(st.sampled_from([1e-3, 1.0, 1e3])),
        seed=draw(st.integers(0, 2**32 - 1)),
        threads=draw(st.sampled_from([1, 2])),  # the work split (sample stacking, tiles) depends on it
    )
    if draw(st.booleans()):  # square hyperparameters given as plain ints, as most callers do
        c.update(stride=c["stride"][0], padding=c["padding"][0], dilation=c["dilation"][0])
    return c


def _data(c):
    g = np.random.default_rng(c["seed"])
    t = c["dtype"]
    x = (g.uniform(-1, 1, (c["N"], c["C"], c["H"], c["W"])) * c["magnitude"]).astype(t)
    w = g.uniform(-1, 1, (c["K"], c["C"] // c["groups"], c["R"], c["S"])).astype(t)
    b = g.uniform(-1, 1, c["K"]).astype(t) if c["bias"] else None
    return g, x, w, b


def _amax(a):
    return float(np.abs(a).max()) if a.size else 0.0


@settings(max_examples=200, deadline=None)
@given(conv_cases())
def test_conv2d_matches_reference(c):
    before = cnnkit.get_num_threads()
    cnnkit.set_num_threads(c["threads"])
    try:
        _check_conv_case(c)
    finally:
        cnnkit.set_num_threads(before)


def _check_conv_case(c):
    g, x, w, b = _data(c)
    hp = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    _, _, P, Q = R.conv2d_out_shape(x.shape, w.shape, c["stride"], c["padding"], c["dilation"])
    event("impossible (output < 1)" if P < 1 or Q < 1 else "valid")
    if P < 1 or Q < 1:
        # The op refuses exactly the configurations whose output would be empty.
        with pytest.raises(ValueError, match="conv2d_fwd: kernel .* larger than the padded input"):
            ops.conv2d_fwd(x, w, b, **hp)
        with pytest.raises(ValueError, match="conv2d_bwd_data: kernel"):
            ops.conv2d_bwd_data(np.zeros((c["N"], c["K"], 1, 1), c["dtype"]), w, x.shape, **hp)
        with pytest.raises(ValueError, match="conv2d_bwd_weight: kernel"):
            ops.conv2d_bwd_weight(np.zeros((c["N"], c["K"], 1, 1), c["dtype"]), x, w.shape, **hp)
        return
    t = c["dtype"]
    Cg, Kg = c["C"] // c["groups"], c["K"] // c["groups"]

    y = ops.conv2d_fwd(x, w, b, **hp)
    assert y.dtype == t and y.shape == (c["N"], c["K"], P, Q)
    R.assert_close(y, R.conv2d_fwd(x, w, b, **hp), reduction=Cg * c["R"] * c["S"] + 1,
                   scale=_amax(x) * _amax(w) + (_amax(b) if b is not None else 0), dtype=t)

    dy = g.uniform(-1, 1, y.shape).astype(t)
    dx = ops.conv2d_bwd_data(dy, w, x.shape, **hp)
    assert dx.dtype == t and dx.shape == x.shape
    R.assert_close(dx, R.conv2d_bwd_data(dy, w, x.shape, **hp), reduction=Kg * c["R"] * c["S"],
                   scale=_amax(dy) * _amax(w), dtype=t)

    dw = ops.conv2d_bwd_weight(dy, x, w.shape, **hp)
    assert dw.dtype == t and dw.shape == w.shape
    R.assert_close(dw, R.conv2d_bwd_weight(dy, x, w.shape, **hp), reduction=c["N"] * P * Q,
                   scale=_amax(dy) * _amax(x), dtype=t)

    db = ops.conv2d_bwd_bias(dy)
    R.assert_close(db, R.conv2d_bwd_bias(dy), reduction=c["N"] * P * Q, scale=_amax(dy), dtype=t)


# Shapes big enough that the kernels split the output rows into several im2col tiles (a tile's column
# buffer is sized for L2), run at 1 and 2 threads; the hypothesis shapes above all fit in one tile.
LARGE = [
    dict(N=2, C=64, K=8, H=30, W=30, R=3, S=3, stride=1, padding=1, dilation=1, groups=1),
    dict(N=3, C=32, K=12, H=29, W=41, R=3, S=5, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
    dict(N=1, C=48, K=16, H=40, W=33, R=1, S=1, stride=1, padding=0, dilation=1, groups=4),  # pointwise
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("cfg", LARGE, ids=["64ch-3x3", "groups-stride-dil", "pointwise-groups"])
def test_conv2d_large_tiled_matches_reference(cfg, dtype, threads, rng):
    hp = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
    x = rng.uniform(-1, 1, (cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    w = rng.uniform(-1, 1, (cfg["K"], cfg["C"] // cfg["groups"], cfg["R"], cfg["S"])).astype(dtype)
    b = rng.uniform(-1, 1, cfg["K"]).astype(dtype)
    y_ref = R.conv2d_fwd(x, w, b, **hp)
    dy = rng.uniform(-1, 1, y_ref.shape).astype(dtype)
    dx_ref, dw_ref = R.conv2d_bwd_data(dy, w, x.shape, **hp), R.conv2d_bwd_weight(dy, x, w.shape, **hp)
    crs = cfg["C"] // cfg["groups"] * cfg["R"] * cfg["S"]
    kgrs = cfg["K"] // cfg["groups"] * cfg["R"] * cfg["S"]
    npq = y_ref.shape[0] * y_ref.shape[2] * y_ref.shape[3]
    for n in (1, 2):
        threads(n)
        R.assert_close(ops.conv2d_fwd(x, w, b, **hp), y_ref, reduction=crs + 1, scale=2.0, dtype=dtype)
        R.assert_close(ops.conv2d_bwd_data(dy, w, x.shape, **hp), dx_ref, reduction=kgrs, scale=1.0, dtype=dtype)
        R.assert_close(ops.conv2d_bwd_weight(dy, x, w.shape, **hp), dw_ref, reduction=npq, scale=1.0, dtype=dtype)


# Many small planes: the kernels stack several samples side by side in one GEMM, in blocks whose size
# depends on N, the groups and the thread count; odd N leaves a short last block.
STACKED = [
    dict(N=13, C=3, K=5, H=6, W=7, R=3, S=3, stride=1, padding=1, dilation=1, groups=1),
    dict(N=8, C=4, K=6, H=5, W=5, R=2, S=3, stride=(1, 2), padding=(0, 1), dilation=(2, 1), groups=2),
    dict(N=11, C=6, K=4, H=4, W=9, R=1, S=1, stride=1, padding=0, dilation=1, groups=2),  # pointwise
    dict(N=9, C=2, K=2, H=3, W=3, R=1, S=1, stride=1, padding=0, dilation=1, groups=1),   # pointwise, tiny
    dict(N=7, C=3, K=3, H=8, W=8, R=3, S=3, stride=2, padding=1, dilation=1, groups=3),   # depthwise
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("cfg", STACKED, ids=["3x3", "rect-dil-groups", "pointwise-groups", "pointwise-tiny", "depthwise"])
def test_conv2d_stacked_small_planes_match_reference(cfg, dtype, threads, rng):
    hp = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
    x = rng.uniform(-1, 1, (cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    w = rng.uniform(-1, 1, (cfg["K"], cfg["C"] // cfg["groups"], cfg["R"], cfg["S"])).astype(dtype)
    b = rng.uniform(-1, 1, cfg["K"]).astype(dtype)
    y_ref = R.conv2d_fwd(x, w, b, **hp)
    dy = rng.uniform(-1, 1, y_ref.shape).astype(dtype)
    dx_ref, dw_ref = R.conv2d_bwd_data(dy, w, x.shape, **hp), R.conv2d_bwd_weight(dy, x, w.shape, **hp)
    crs = cfg["C"] // cfg["groups"] * cfg["R"] * cfg["S"]
    kgrs = cfg["K"] // cfg["groups"] * cfg["R"] * cfg["S"]
    npq = y_ref.shape[0] * y_ref.shape[2] * y_ref.shape[3]
    for n in (1, 2, 3):
        threads(n)
        R.assert_close(ops.conv2d_fwd(x, w, b, **hp), y_ref, reduction=crs + 1, scale=2.0, dtype=dtype)
        R.assert_close(ops.conv2d_bwd_data(dy, w, x.shape, **hp), dx_ref, reduction=kgrs, scale=1.0, dtype=dtype)
        R.assert_close(ops.conv2d_bwd_weight(dy, x, w.shape, **hp), dw_ref, reduction=npq, scale=1.0, dtype=dtype)


# ---------------------------------------------------------------- hand-worked cases

X33 = np.array([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]], dtype=F64)
W22 = np.array([[[[1, 2], [3, 4]]]], dtype=F64)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_hand_2x2_kernel_on_3x3(dtype):
    x, w = X33.astype(dtype), W22.astype(dtype)
    # y[p, q] = x[p, q] + 2 x[p, q+1] + 3 x[p+1, q] + 4 x[p+1, q+1] + b
    y = ops.conv2d_fwd(x, w, np.array([0.5], dtype))
    np.testing.assert_array_equal(y, np.array([[[[37.5, 47.5], [67.5, 77.5]]]], dtype))
    dy = np.ones((1, 1, 2, 2), dtype)
    # dx[i, j] = sum of the weights that touch (i, j) over the four windows
    np.testing.assert_array_equal(ops.conv2d_bwd_data(dy, w, x.shape),
                                  np.array([[[[1, 3, 2], [4, 10, 6], [3, 7, 4]]]], dtype))
    # dw[r, s] = sum of the 2x2 block of x starting at (r, s)
    np.testing.assert_array_equal(ops.conv2d_bwd_weight(dy, x, w.shape),
                                  np.array([[[[12, 16], [24, 28]]]], dtype))
    np.testing.assert_array_equal(ops.conv2d_bwd_bias(dy), np.array([4], dtype))


def test_hand_stride_2_padding_1():
    # Windows start at rows/cols -1 and 1: the top-left window sees only x[0, 0].
    y = ops.conv2d_fwd(X33, np.ones((1, 1, 2, 2)), stride=2, padding=1)
    np.testing.assert_array_equal(y, [[[[1, 2 + 3], [4 + 7, 5 + 6 + 8 + 9]]]])
    dx = ops.conv2d_bwd_data(np.array([[[[1.0, 10], [100, 1000]]]]), np.ones((1, 1, 2, 2)), X33.shape, stride=2, padding=1)
    np.testing.assert_array_equal(dx, [[[[1, 10, 10], [100, 1000, 1000], [100, 1000, 1000]]]])


def test_hand_groups_and_dilation():
    # Dilation 2 makes the 2x2 kernel read the four corners; with groups=2 channel k only sees channel k.
    x = np.concatenate([X33, 10 * X33], axis=1)
    w = np.array([[[[1, 0], [0, 0]]], [[[0, 0], [0, 1]]]], dtype=F64)
    y = ops.conv2d_fwd(x, w, dilation=2, groups=2)
    np.testing.assert_array_equal(y, [[[[1]], [[90]]]])
    dw = ops.conv2d_bwd_weight(np.array([[[[1.0]], [[2.0]]]]), x, w.shape, dilation=2, groups=2)
    np.testing.assert_array_equal(dw, [[[[1, 3], [7, 9]]], [[[20, 60], [140, 180]]]])


# ---------------------------------------------------------------- 3. float64 central differences

GRAD_CFGS = [
    dict(N=2, C=4, K=4, H=5, W=6, R=3, S=2, stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
    dict(N=1, C=3, K=2, H=4, W=4, R=1, S=1, stride=1, padding=0, dilation=1, groups=1),  # pointwise path
    dict(N=1, C=2, K=3, H=3, W=5, R=2, S=3, stride=3, padding=2, dilation=1, groups=1),
]


@pytest.mark.parametrize("cfg", GRAD_CFGS, ids=["groups-dil", "pointwise", "stride3-pad2"])
def test_conv2d_central_differences(cfg, rng):
    hp = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"]))
    w = rng.standard_normal((cfg["K"], cfg["C"] // cfg["groups"], cfg["R"], cfg["S"]))
    b = rng.standard_normal(cfg["K"])
    dy = rng.standard_normal(ops.conv2d_fwd(x, w, b, **hp).shape)
    num_dx = R.numeric_grad(lambda v: ops.conv2d_fwd(v, w, b, **hp), x, dy)
    num_dw = R.numeric_grad(lambda v: ops.conv2d_fwd(x, v, b, **hp), w, dy)
    num_db = R.numeric_grad(lambda v: ops.conv2d_fwd(x, w, v, **hp), b, dy)
    np.testing.assert_allclose(ops.conv2d_bwd_data(dy, w, x.shape, **hp), num_dx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ops.conv2d_bwd_weight(dy, x, w.shape, **hp), num_dw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ops.conv2d_bwd_bias(dy), num_db, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- zero-size batch, out= and accumulate=

@pytest.mark.parametrize("dtype", [F32, F64])
def test_zero_batch(dtype):
    x = np.zeros((0, 4, 7, 6), dtype)
    w = np.ones((6, 2, 3, 3), dtype)
    y = ops.conv2d_fwd(x, w, np.ones(6, dtype), padding=1, groups=2)
    assert y.shape == (0, 6, 7, 6) and y.dtype == dtype
    dx = ops.conv2d_bwd_data(y, w, x.shape, padding=1, groups=2)
    assert dx.shape == x.shape and dx.dtype == dtype
    dw = ops.conv2d_bwd_weight(y, x, w.shape, padding=1, groups=2)
    np.testing.assert_array_equal(dw, np.zeros(w.shape, dtype))  # an empty sum is written as zeros
    acc = np.full(w.shape, 3.0, dtype)
    ops.conv2d_bwd_weight(y, x, w.shape, padding=1, groups=2, out=acc, accumulate=True)
    np.testing.assert_array_equal(acc, np.full(w.shape, 3.0, dtype))  # adding nothing leaves it as it was
    np.testing.assert_array_equal(ops.conv2d_bwd_bias(y), np.zeros(6, dtype))


def _ptr(a):
    return a.__array_interface__["data"][0]


def test_out_arrays_are_written_in_place(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    y_ref = ops.conv2d_fwd(x, w, padding=1)
    out = np.full(y_ref.shape, np.nan)
    y = ops.conv2d_fwd(x, w, padding=1, out=out)
    assert y is out or _ptr(y) == _ptr(out)
    np.testing.assert_array_equal(out, y_ref)

    dy = rng.standard_normal(y_ref.shape)
    dx = np.full(x.shape, np.nan)  # garbage must be overwritten (=), not added to
    assert _ptr(ops.conv2d_bwd_data(dy, w, x.shape, padding=1, out=dx)) == _ptr(dx)
    np.testing.assert_array_equal(dx, ops.conv2d_bwd_data(dy, w, x.shape, padding=1))

    dw_fresh = ops.conv2d_bwd_weight(dy, x, w.shape, padding=1)
    dw = np.full(w.shape, np.nan)
    assert _ptr(ops.conv2d_bwd_weight(dy, x, w.shape, padding=1, out=dw)) == _ptr(dw)
    np.testing.assert_array_equal(dw, dw_fresh)

    # accumulate=True adds into out, as parameter gradients accumulate over micro-batches
    base = rng.standard_normal(w.shape)
    acc = base.copy()
    res = ops.conv2d_bwd_weight(dy, x, w.shape, padding=1, out=acc, accumulate=True)
    assert _ptr(res) == _ptr(acc)
    np.testing.assert_allclose(acc, base + dw_fresh, rtol=1e-12, atol=1e-12)
    ops.conv2d_bwd_weight(dy, x, w.shape, padding=1, out=acc, accumulate=True)
    np.testing.assert_allclose(acc, base + 2 * dw_fresh, rtol=1e-12, atol=1e-12)

    db = np.ones(4)
    ops.conv2d_bwd_bias(dy, out=db, accumulate=True)
    np.testing.assert_allclose(db, 1 + dy.sum(axis=(0, 2, 3)), rtol=1e-12)


# ---------------------------------------------------------------- on each device (tests/ops/conftest.py)

CONV_CASES = [  # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1),
    ((2, 4, 9, 7), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((1, 6, 5, 5), (6, 1, 3, 3), 1, 1, 1, 6),          # depthwise
    ((3, 16, 12, 12), (70, 16, 1, 1), 1, 0, 1, 1),     # pointwise, K not a multiple of the 64 tile
    ((2, 8, 15, 13), (8, 4, 5, 5), 3, 2, 2, 2),
    ((4, 32, 16, 16), (64, 32, 3, 3), 1, 1, 1, 1),     # several tiles in every GEMM dimension
    ((8, 16, 32, 32), (16, 16, 3, 3), 1, 1, 1, 1),     # one output tile: the weight pass splits K 16 ways
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_passes_on_each_device_match_the_cpu(device, dtype, case):
    # The CPU against the float64 reference and a GPU against the CPU, within float32-accumulation
    # tolerances; the stand-in runs the CPU kernels, so there every pass must be the CPU's bit for bit.
    xs, ws, s, p, d, g = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    if device.name == "cpu":
        y = R.conv2d_fwd(x, w, b, s, p, d, g)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx = R.conv2d_bwd_data(dy, w, xs, s, p, d, g)
        dw0 = rng.standard_normal(ws).astype(dtype)
        dw = R.conv2d_bwd_weight(dy, x, ws, s, p, d, g) + dw0
        db = R.conv2d_bwd_bias(dy)
        y_nobias, dw_fresh = R.conv2d_fwd(x, w, None, s, p, d, g), dw - dw0
    else:
        y = ops.conv2d_fwd(x, w, b, s, p, d, g)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx = ops.conv2d_bwd_data(dy, w, xs, s, p, d, g)
        dw0 = rng.standard_normal(ws).astype(dtype)
        dw = ops.conv2d_bwd_weight(dy, x, ws, s, p, d, g, out=dw0.copy(), accumulate=True)
        db = ops.conv2d_bwd_bias(dy)
        y_nobias, dw_fresh = ((ops.conv2d_fwd(x, w, None, s, p, d, g), ops.conv2d_bwd_weight(dy, x, ws, s, p, d, g))
                              if device.name == "fakecupy" else (y - b[None, :, None, None], dw - dw0))

    xd, wd, bd, dyd = (device.asarray(a) for a in (x, w, b, dy))
    crs = ws[1] * ws[2] * ws[3]
    # float32: both sides accumulate in float32, in different orders; the error grows like sqrt(terms).
    tol = dict(rtol=1e-4, atol=1e-4 * np.sqrt(crs)) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    terms = y.shape[0] * y.shape[2] * y.shape[3]
    wtol = dict(rtol=1e-4, atol=1e-4 * np.sqrt(terms)) if dtype == np.float32 else tol
    btol = dict(rtol=1e-6, atol=1e-6)
    if device.name == "fakecupy":
        tol = wtol = btol = dict(rtol=0, atol=0)
    np.testing.assert_allclose(device.host(ops.conv2d_fwd(xd, wd, bd, s, p, d, g)), y, **tol)
    np.testing.assert_allclose(device.host(ops.conv2d_fwd(xd, wd, None, s, p, d, g)), y_nobias, **tol)
    np.testing.assert_allclose(device.host(ops.conv2d_bwd_data(dyd, wd, xs, s, p, d, g)), dx, **tol)
    dwd = ops.conv2d_bwd_weight(dyd, xd, ws, s, p, d, g, out=device.asarray(dw0), accumulate=True)
    np.testing.assert_allclose(device.host(dwd), dw, **wtol)
    np.testing.assert_allclose(device.host(ops.conv2d_bwd_weight(dyd, xd, ws, s, p, d, g)), dw_fresh, **wtol)
    np.testing.assert_allclose(device.host(ops.conv2d_bwd_bias(dyd)), db, **btol)


@pytest.mark.parametrize("device", ["cuda"], indirect=True)
def test_conv2d_on_a_non_default_stream(device):
    cp = device.xp
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    want = ops.conv2d_fwd(x, w, padding=1)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        y = ops.conv2d_fwd(cp.asarray(x), cp.asarray(w), padding=1)
    stream.synchronize()
    np.testing.assert_allclose(y.get(), want, rtol=1e-4, atol=1e-4)
