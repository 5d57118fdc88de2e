# maxpool2d with argmax: bad inputs (ops and _C), values and indices against the numpy reference over
# random shapes with ties, NaN and -inf (hypothesis), hand-worked 4x4 / 3x3 / ceil_mode cases, float64
# central differences, N=0, bit-identical results at 1 and 2 threads, PyTorch's max_pool2d as oracle, and
# every pooling geometry against torch's. Tests taking `device` run on the CPU, the CuPy stand-in and a GPU.

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies as st

from cnnkit import _C, ops

from helpers import reference as R

F32, F64 = np.float32, np.float64
NAN, INF = np.nan, np.inf

X = np.arange(2 * 3 * 6 * 6, dtype=F64).reshape(2, 3, 6, 6)
Y, IDX = ops.maxpool2d_fwd(X, 2)
RO = np.zeros(Y.shape)
RO.flags.writeable = False


# ---------------------------------------------------------------- 1. bad inputs

BAD = [
    ("x-list", lambda: ops.maxpool2d_fwd(X.tolist(), 2), TypeError, r"maxpool2d_fwd: x must be a numpy\.ndarray, got list"),
    ("x-int", lambda: ops.maxpool2d_fwd(X.astype(np.int64), 2), TypeError, r"maxpool2d_fwd: x must be float32 or float64, got int64"),
    ("x-3d", lambda: ops.maxpool2d_fwd(X[0], 2), ValueError, r"maxpool2d_fwd: x must be 4-D, got shape \(3, 6, 6\)"),
    ("x-noncontig", lambda: ops.maxpool2d_fwd(X[:, :, ::2], 2), ValueError, r"maxpool2d_fwd: x must be C-contiguous"),
    ("x-empty-plane", lambda: ops.maxpool2d_fwd(np.zeros((1, 1, 0, 4)), 1), ValueError, r"maxpool2d_fwd: x must have C, H, W >= 1"),
    ("kernel-0", lambda: ops.maxpool2d_fwd(X, 0), ValueError, r"maxpool2d_fwd: kernel_size must be >= 1, got 0"),
    ("kernel-float", lambda: ops.maxpool2d_fwd(X, 2.0), TypeError, r"maxpool2d_fwd: kernel_size must be an int, got float"),
    ("kernel-huge", lambda: ops.maxpool2d_fwd(X, 2**40, padding=2**39), ValueError, r"maxpool2d_fwd: kernel"),
    ("stride-0", lambda: ops.maxpool2d_fwd(X, 2, stride=0), ValueError, r"maxpool2d_fwd: stride must be >= 1, got 0"),
    ("stride-neg-w", lambda: ops.maxpool2d_fwd(X, 2, stride=(1, -1)), ValueError, r"maxpool2d_fwd: stride must be >= 1, got \(1, -1\)"),
    ("dilation-0", lambda: ops.maxpool2d_fwd(X, 2, dilation=0), ValueError, r"maxpool2d_fwd: dilation must be >= 1, got 0"),
    ("padding-neg", lambda: ops.maxpool2d_fwd(X, 2, padding=-1), ValueError, r"maxpool2d_fwd: padding must be >= 0, got -1"),
    ("padding-over-half", lambda: ops.maxpool2d_fwd(X, 3, padding=2), ValueError, r"maxpool2d_fwd: padding must be at most half the kernel size, got padding \(2, 2\) for kernel \(3, 3\)"),
    ("padding-over-half-w", lambda: ops.maxpool2d_fwd(X, (2, 3), padding=(1, 2)), ValueError, r"maxpool2d_fwd: padding must be at most half the kernel size"),
    ("kernel-too-big", lambda: ops.maxpool2d_fwd(X, 7), ValueError, r"maxpool2d_fwd: output height would be 0; it must be >= 1: kernel height with dilation \(7\) is larger than the padded input \(6\)$"),
    ("dilated-kernel-too-big", lambda: ops.maxpool2d_fwd(X, (1, 2), dilation=6), ValueError, r"maxpool2d_fwd: output width would be 0; it must be >= 1: kernel width with dilation \(7\) is larger"),
    ("ceil-mode-int", lambda: ops.maxpool2d_fwd(X, 2, ceil_mode=1), TypeError, r"maxpool2d_fwd: ceil_mode must be a bool, got int"),
    # maxpool2d_bwd
    ("bwd-indices-int32", lambda: ops.maxpool2d_bwd(Y, IDX.astype(np.int32), X.shape), TypeError, r"maxpool2d_bwd: indices must have dtype int64"),
    ("bwd-indices-float", lambda: ops.maxpool2d_bwd(Y, IDX.astype(F64), X.shape), TypeError, r"maxpool2d_bwd: indices must have dtype int64"),
    ("bwd-dy-int", lambda: ops.maxpool2d_bwd(IDX, IDX, X.shape), TypeError, r"maxpool2d_bwd: dy must be float32 or float64"),
    ("bwd-indices-shape", lambda: ops.maxpool2d_bwd(Y, IDX[:, :, :2].copy(), X.shape), ValueError, r"maxpool2d_bwd: indices must have the shape of dy \(2, 3, 3, 3\)"),
    ("bwd-dy-3d", lambda: ops.maxpool2d_bwd(Y[0], IDX[0], X.shape), ValueError, r"maxpool2d_bwd: dy must be 4-D"),
    ("bwd-nc-mismatch", lambda: ops.maxpool2d_bwd(Y, IDX, (2, 4, 6, 6)), ValueError, r"maxpool2d_bwd: dy \(N, C\) = \(2, 3\) must match x_shape \(N, C\) = \(2, 4\)"),
    ("bwd-index-too-big", lambda: ops.maxpool2d_bwd(Y, np.full(Y.shape, 36, np.int64), X.shape), ValueError, r"maxpool2d_bwd: indices must lie in \[0, H\*W\) = \[0, 36\), got 36"),
    ("bwd-index-negative", lambda: ops.maxpool2d_bwd(Y, np.where(IDX == 7, -1, IDX), X.shape), ValueError, r"maxpool2d_bwd: indices must lie in \[0, H\*W\).*got -1"),
    ("bwd-index-huge", lambda: ops.maxpool2d_bwd(Y, np.full(Y.shape, 2**62, np.int64), X.shape), ValueError, r"maxpool2d_bwd: indices must lie in"),
    ("bwd-indices-noncontig", lambda: ops.maxpool2d_bwd(Y, np.repeat(IDX, 2, axis=3)[..., ::2], X.shape), ValueError, r"maxpool2d_bwd: indices must be C-contiguous"),
    ("bwd-xshape-huge", lambda: ops.maxpool2d_bwd(Y, IDX, (2, 3, 2**40, 2**40)), ValueError, r"maxpool2d_bwd: x_shape .* too many"),
    ("bwd-xshape-3", lambda: ops.maxpool2d_bwd(Y, IDX, (2, 3, 36)), ValueError, r"maxpool2d_bwd: x_shape must be a 4-tuple"),
]


@pytest.mark.parametrize("call, exc, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


_Yc, _Ic = np.empty(Y.shape), np.empty(Y.shape, np.int64)
C_BAD = [
    ("y-wrong-shape", lambda: _C.maxpool2d_fwd(X, np.empty((2, 3, 3, 2)), _Ic, (2, 2), (2, 2), (0, 0), (1, 1), False), ValueError, r"maxpool2d_fwd: y must have shape \(2, 3, 3, 3\)"),
    ("y-readonly", lambda: _C.maxpool2d_fwd(X, RO, _Ic, (2, 2), (2, 2), (0, 0), (1, 1), False), ValueError, r"maxpool2d_fwd: y must be writable"),
    ("indices-int32", lambda: _C.maxpool2d_fwd(X, _Yc, np.empty(Y.shape, np.int32), (2, 2), (2, 2), (0, 0), (1, 1), False), TypeError, r"maxpool2d_fwd: indices must have dtype int64"),
    ("padding-over-half", lambda: _C.maxpool2d_out_shape([1, 1, 8, 8], (2, 2), (2, 2), (2, 0), (1, 1), False), ValueError, r"maxpool2d_fwd: padding must be at most half"),
    ("bwd-index-out-of-range", lambda: _C.maxpool2d_bwd(Y, np.full(Y.shape, 99, np.int64), np.empty(X.shape)), ValueError, r"maxpool2d_bwd: indices must lie in \[0, H\*W\) = \[0, 36\), got 99"),
    ("bwd-dx-readonly", lambda: _C.maxpool2d_bwd(Y, IDX, np.broadcast_to(np.zeros(1), X.shape)), ValueError, r"maxpool2d_bwd: dx must be (C-contiguous|writable)"),
]


@pytest.mark.parametrize("call, exc, match", [b[1:] for b in C_BAD], ids=[b[0] for b in C_BAD])
def test_C_checks_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- 2. forward and backward vs the reference

@st.composite
def pool_cases(draw, min_n=0):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    c = dict(
        shape=(draw(st.integers(min_n, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12))),
        kernel_size=(kh, kw),
        stride=draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3)))),
        padding=(draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))),
        dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        ceil_mode=draw(st.booleans()),
        dtype=draw(st.sampled_from([F32, F64])),
        levels=draw(st.sampled_from([3, 1000])),        # 3 levels: ties everywhere
        specials=draw(st.sampled_from([0.0, 0.05, 0.3])),  # fraction of NaN / -inf / +inf cells
        seed=draw(st.integers(0, 2**32 - 1)),
    )
    if draw(st.booleans()):  # ints for square windows, as most callers write them
        if kh == kw and c["padding"][0] == c["padding"][1] and c["dilation"][0] == c["dilation"][1]:
            c.update(kernel_size=kh, padding=c["padding"][0], dilation=c["dilation"][0])
    return c


def _pool_input(c):
    g = np.random.default_rng(c["seed"])
    x = g.integers(0, c["levels"], c["shape"]).astype(c["dtype"]) - c["levels"] / 2
    special = g.random(c["shape"]) < c["specials"]
    x[special] = g.choice(np.array([NAN, -INF, INF, NAN], dtype=c["dtype"]), special.sum())
    return g, x


def _hp(c):
    return {k: c[k] for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}


@settings(max_examples=200, deadline=None)
@given(pool_cases())
def test_maxpool2d_matches_reference(c):
    g, x = _pool_input(c)
    (kh, kw), (sh, sw) = R.pair(c["kernel_size"]), R.pair(c["stride"] or c["kernel_size"])
    (ph, pw), (dh, dw) = R.pair(c["padding"]), R.pair(c["dilation"])
    P = R.pool_out_size(x.shape[2], kh, sh, ph, dh, c["ceil_mode"])
    Q = R.pool_out_size(x.shape[3], kw, sw, pw, dw, c["ceil_mode"])
    event("impossible (output < 1)" if P < 1 or Q < 1 else "valid")
    if P < 1 or Q < 1:
        with pytest.raises(ValueError, match="maxpool2d_fwd: output .* would be .*: kernel .* larger than the padded input"):
            ops.maxpool2d_fwd(x, **_hp(c))
        return
    in_padding = (R.pool_window_in_padding(x.shape[2], kh, sh, ph, dh, P)
                  or R.pool_window_in_padding(x.shape[3], kw, sw, pw, dw, Q))
    event(f"window wholly in padding: {in_padding}")
    if in_padding:
        # Only possible with dilation. torch returns -inf with an index outside the plane there;
        # cnnkit refuses the combination up front instead of handing out an index backward can't use.
        with pytest.raises(ValueError, match="maxpool2d_fwd: .* lies wholly in the padding"):
            ops.maxpool2d_fwd(x, **_hp(c))
        return
    y, idx = ops.maxpool2d_fwd(x, **_hp(c))
    y_ref, idx_ref = R.maxpool2d_fwd(x, **_hp(c))
    assert y.dtype == x.dtype and idx.dtype == np.int64 and y.shape == (x.shape[0], x.shape[1], P, Q)
    np.testing.assert_array_equal(y, y_ref)  # exact, NaN == NaN here
    np.testing.assert_array_equal(idx, idx_ref)
    HW = x.shape[2] * x.shape[3]
    assert idx.size == 0 or (idx.min() >= 0 and idx.max() < HW)

    dy = g.uniform(-1, 1, y.shape).astype(x.dtype)
    event(f"N=0: {x.shape[0] == 0}; NaN in y: {bool(np.isnan(y).any())}")
    dx = ops.maxpool2d_bwd(dy, idx, x.shape)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    overlap = -(-kh // sh) * -(-kw // sw)  # windows that can share one cell
    R.assert_close(dx, R.maxpool2d_bwd(dy, idx, x.shape), reduction=overlap,
                   scale=float(np.abs(dy).max()) if dy.size else 0.0, dtype=x.dtype)


@settings(max_examples=80, deadline=None)
@given(shape=st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(2, 7), st.integers(16, 70)),
       dtype=st.sampled_from([F32, F64]), levels=st.sampled_from([2, 1000]), specials=st.sampled_from([0.0, 0.1]),
       seed=st.integers(0, 2**32 - 1))
def test_maxpool2d_2x2_wide_rows_match_reference(shape, dtype, levels, specials, seed):
    # The 2x2 stride-2 case has its own kernel, vectorized 8 outputs at a time: rows of 16..70 columns
    # cover whole vectors plus every tail length.
    c = dict(shape=shape, dtype=dtype, levels=levels, specials=specials, seed=seed)
    g, x = _pool_input(c)
    y, idx = ops.maxpool2d_fwd(x, 2)
    y_ref, idx_ref = R.maxpool2d_fwd(x, 2)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dy = g.uniform(-1, 1, y.shape).astype(dtype)
    assert ops.maxpool2d_bwd(dy, idx, x.shape).tobytes() == R.maxpool2d_bwd(dy, idx, x.shape).astype(dtype).tobytes()


# ---------------------------------------------------------------- hand-worked cases

def test_hand_4x4_ties_and_nan():
    x = np.array([[[[1, 3, 2, 2],
                    [3, 0, 2, 1],
                    [NAN, 4, 5, 5],
                    [1, NAN, 5, 0]]]])
    for dtype in (F32, F64):
        y, idx = ops.maxpool2d_fwd(x.astype(dtype), 2)
        # top-left: 3 at flat 1 and 4, the first wins; top-right: four-way tie of 2 -> first (2);
        # bottom-left: NaN at 8 and 13 -> NaN, the last NaN (13); bottom-right: 5 at 10, 11, 14 -> 10
        np.testing.assert_array_equal(y, np.array([[[[3, 2], [NAN, 5]]]], dtype))
        np.testing.assert_array_equal(idx, [[[[1, 2], [13, 10]]]])
        dx = ops.maxpool2d_bwd(np.array([[[[1, 2], [3, 4]]]], dtype), idx, x.shape)
        np.testing.assert_array_equal(dx, np.array([[[[0, 1, 2, 0], [0, 0, 0, 0], [0, 0, 4, 0], [0, 3, 0, 0]]]], dtype))


def test_hand_3x3_padding_general_path():
    x = np.array([[[[1, 5, 5], [2, 3, 0], [7, 7, -1]]]], dtype=F64)
    y, idx = ops.maxpool2d_fwd(x, 3, stride=2, padding=1)
    np.testing.assert_array_equal(y, [[[[5, 5], [7, 7]]]])
    np.testing.assert_array_equal(idx, [[[[1, 1], [6, 7]]]])
    # all-negative input: the -inf padding is never chosen
    y, idx = ops.maxpool2d_fwd(np.array([[[[-1.0, -5, -5], [-2, -3, -9], [-7, -7, -1]]]]), 3, stride=2, padding=1)
    np.testing.assert_array_equal(y, [[[[-1, -3], [-2, -1]]]])
    np.testing.assert_array_equal(idx, [[[[0, 4], [3, 8]]]])
    # overlapping windows that share an argmax accumulate in backward
    dx = ops.maxpool2d_bwd(np.array([[[[1.0, 10], [100, 1000]]]]), np.array([[[[1, 1], [6, 7]]]]), x.shape)
    np.testing.assert_array_equal(dx, [[[[0, 11, 0], [0, 0, 0], [100, 1000, 0]]]])


def test_hand_ceil_mode():
    x = np.array([[[[1.0, 2, 3, 4, 5]]]])
    y, idx = ops.maxpool2d_fwd(x, (1, 2), ceil_mode=True)  # the last window holds only x[4]
    np.testing.assert_array_equal(y, [[[[2, 4, 5]]]])
    np.testing.assert_array_equal(idx, [[[[1, 3, 4]]]])
    y, idx = ops.maxpool2d_fwd(x, (1, 2), ceil_mode=False)
    np.testing.assert_array_equal(y, [[[[2, 4]]]])
    # W=3, kernel 2, stride 2, padding 1: windows start at -1, 1 and (ceil) 3; the one at 3 would start
    # in the right padding, so it is dropped.
    y, idx = ops.maxpool2d_fwd(np.array([[[[1.0, 2, 3]]]]), (1, 2), stride=(1, 2), padding=(0, 1), ceil_mode=True)
    np.testing.assert_array_equal(y, [[[[1, 3]]]])
    np.testing.assert_array_equal(idx, [[[[0, 2]]]])


def test_window_entirely_in_padding_is_refused():
    # H = W = 1, kernel 2, dilation 2, padding 1: the only window reads cells -1 and 1, both outside.
    # torch returns -inf with an out-of-plane index there; cnnkit refuses the combination up front.
    assert R.pool_window_in_padding(1, 2, 1, 1, 2, 1)
    with pytest.raises(ValueError, match="maxpool2d_fwd: .*window at output height 0 lies wholly in the padding"):
        ops.maxpool2d_fwd(np.array([[[[5.0]]]]), 2, stride=1, padding=1, dilation=2)
    # The same window with dilation 1 reads cells -1 and 0: fine.
    y, idx = ops.maxpool2d_fwd(np.array([[[[5.0]]]]), 2, stride=1, padding=1, dilation=1)
    np.testing.assert_array_equal(idx, [[[[0, 0], [0, 0]]]])


# ---------------------------------------------------------------- 3. float64 central differences

@pytest.mark.parametrize("hp", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, stride=1, dilation=2),
                                dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), ceil_mode=True), dict(kernel_size=2)],
                         ids=["3x3-s2-p1", "dilated-overlap", "rect-ceil", "2x2-fast"])
def test_maxpool2d_central_differences(hp, rng):
    # Distinct values 0.1 apart: no ties and no kink within +-eps, so the max is differentiable.
    x = rng.permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6) * 0.1 + rng.uniform(-0.01, 0.01, (2, 2, 7, 6))
    y, idx = ops.maxpool2d_fwd(x, **hp)
    dy = rng.standard_normal(y.shape)
    num = R.numeric_grad(lambda v: ops.maxpool2d_fwd(v, **hp)[0], x, dy)
    np.testing.assert_allclose(ops.maxpool2d_bwd(dy, idx, x.shape), num, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------- zero-size batch and threads

@pytest.mark.parametrize("dtype", [F32, F64])
def test_zero_batch(dtype):
    x = np.zeros((0, 3, 7, 5), dtype)
    y, idx = ops.maxpool2d_fwd(x, 3, stride=2, padding=1, ceil_mode=True)
    assert y.shape == idx.shape == (0, 3, 4, 3) and y.dtype == dtype and idx.dtype == np.int64
    dx = ops.maxpool2d_bwd(y, idx, x.shape)
    assert dx.shape == x.shape and dx.dtype == dtype


@pytest.mark.parametrize("hp", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=(2, 3), stride=1, dilation=(2, 1))],
                         ids=["2x2-fast", "3x3-ceil", "dilated"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_bit_identical_at_1_and_2_threads(threads, hp, dtype, rng):
    x = rng.integers(0, 5, (4, 8, 33, 35)).astype(dtype)
    x[rng.random(x.shape) < 0.01] = NAN
    results = []
    for n in (1, 2, 1):
        threads(n)
        y, idx = ops.maxpool2d_fwd(x, **hp)
        dy = np.linspace(-1, 1, y.size, dtype=dtype).reshape(y.shape)
        results.append((y.tobytes(), idx.tobytes(), ops.maxpool2d_bwd(dy, idx, x.shape).tobytes()))
    assert results[0] == results[1] == results[2]


# ---------------------------------------------------------------- PyTorch as the outside oracle

@settings(max_examples=100, deadline=None)
@given(pool_cases(min_n=1))
def test_maxpool2d_matches_torch(c):
    torch = pytest.importorskip("torch")
    g, x = _pool_input(c)
    hp = _hp(c)
    (kh, kw), (ph, pw), (dh, dw) = R.pair(c["kernel_size"]), R.pair(c["padding"]), R.pair(c["dilation"])
    sh, sw = R.pair(c["stride"] or c["kernel_size"])
    P = R.pool_out_size(x.shape[2], kh, sh, ph, dh, c["ceil_mode"])
    Q = R.pool_out_size(x.shape[3], kw, sw, pw, dw, c["ceil_mode"])
    if P < 1 or Q < 1:  # both refuse; a window larger than the padded input is fine while P, Q >= 1
        with pytest.raises(RuntimeError):
            torch.nn.functional.max_pool2d(torch.from_numpy(x), **hp)
        with pytest.raises(ValueError, match="maxpool2d_fwd: output .* would be"):
            ops.maxpool2d_fwd(x, **hp)
        return
    if R.pool_window_in_padding(x.shape[2], kh, sh, ph, dh, P) or R.pool_window_in_padding(x.shape[3], kw, sw, pw, dw, Q):
        # The one deliberate difference: a window wholly in the padding (torch: -inf and an index
        # outside the window) is refused.
        with pytest.raises(ValueError, match="lies wholly in the padding"):
            ops.maxpool2d_fwd(x, **hp)
        return
    y, idx = ops.maxpool2d_fwd(x, **hp)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty, tidx = torch.nn.functional.max_pool2d(tx, **hp, return_indices=True)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert idx.size == 0 or (idx.min() >= 0 and idx.max() < x.shape[2] * x.shape[3])
    dy = g.uniform(-1, 1, y.shape).astype(x.dtype)
    ty.backward(torch.from_numpy(dy))
    R.assert_close(ops.maxpool2d_bwd(dy, idx, x.shape), tx.grad.numpy(), reduction=kh * kw,
                   scale=float(np.abs(dy).max()), dtype=x.dtype)


TORCH_CFGS = [
    dict(kernel_size=2),
    dict(kernel_size=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=2, stride=1, dilation=3),
    dict(kernel_size=4, stride=3, padding=2, ceil_mode=True),
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("hp", TORCH_CFGS, ids=["2x2", "2x2-ceil", "3x3-s2-p1-ceil", "rect-dil-ceil", "dil3-overlap", "4x4-s3-p2-ceil"])
def test_maxpool2d_matches_torch_fixed_configs(hp, dtype, rng):
    torch = pytest.importorskip("torch")
    x = rng.integers(0, 4, (2, 3, 11, 37)).astype(dtype)  # four levels: ties in nearly every window
    x[rng.random(x.shape) < 0.03] = NAN
    x[0, 0, :2, :2] = NAN  # several NaNs in one window: torch's CPU kernel picks the last
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty, tidx = torch.nn.functional.max_pool2d(tx, **hp, return_indices=True)
    y, idx = ops.maxpool2d_fwd(x, **hp)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    dy = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(dy))
    kh, kw = R.pair(hp["kernel_size"])
    R.assert_close(ops.maxpool2d_bwd(dy, idx, x.shape), tx.grad.numpy(), reduction=kh * kw,
                   scale=float(np.abs(dy).max()), dtype=dtype)


# ---------------------------------------------------------------- on each device (tests/ops/conftest.py)

POOL_CASES = [  # (shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 7), 3, 2, 1, 1, False),
    ((1, 2, 11, 10), 3, 2, 1, 2, True),
    ((2, 1, 7, 9), (2, 3), (1, 2), (1, 1), 1, True),
    ((1, 1, 5, 5), 3, 1, 1, 1, False),
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_values_and_indices_on_each_device_match_the_cpu(device, dtype, case):
    # values and indices exact: the CPU against the reference, the stand-in and a GPU against the CPU
    want_fwd, want_bwd = (R.maxpool2d_fwd, R.maxpool2d_bwd) if device.name == "cpu" else \
        (ops.maxpool2d_fwd, ops.maxpool2d_bwd)
    shape, k, s, p, d, ceil = case
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, size=shape).astype(dtype)  # small integers: many ties
    x.flat[5::23] = np.nan
    x.flat[7::31] = -np.inf
    y, ind = want_fwd(x, k, s, p, d, ceil)
    yd, indd = ops.maxpool2d_fwd(device.asarray(x), k, s, p, d, ceil)
    np.testing.assert_array_equal(device.host(yd), y)
    np.testing.assert_array_equal(device.host(indd), ind)
    assert indd.dtype == np.int64
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = want_bwd(dy, ind, shape)
    dxd = ops.maxpool2d_bwd(device.asarray(dy), indd, shape)
    # atomicAdd adds in no fixed order where windows share an argmax, so each cell of dx is held to the bound
    # for two sums of its m terms in different orders, (m - 1) * eps * sum|terms|, and is exact where m <= 1.
    # The stand-in runs the CPU kernel: there dx must be the CPU's bit for bit.
    planes, hw = shape[0] * shape[1], shape[2] * shape[3]
    cells = (np.arange(planes)[:, None] * hw + ind.reshape(planes, -1)).ravel()
    terms = np.bincount(cells, minlength=planes * hw)
    mass = np.bincount(cells, weights=np.abs(dy.astype(np.float64)).ravel(), minlength=planes * hw)
    bound = np.maximum(terms - 1, 0) * np.finfo(dtype).eps * mass
    if device.name == "fakecupy":
        np.testing.assert_array_equal(device.host(dxd), dx)
    err = np.abs(device.host(dxd).astype(np.float64) - dx).ravel()
    assert np.all(err <= bound), f"worst err/bound {np.max(err / np.where(bound > 0, bound, np.inf)):.3g}"
