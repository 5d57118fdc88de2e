# Winograd F(4x4, 3x3) conv2d (csrc/ops/winograd.cpp): the three passes against the numpy reference and PyTorch
# over odd plane sizes, paddings 0..3, groups, N=1, both dtypes; accumulate semantics; the measured float32 error
# bound on random and large-dynamic-range inputs; refusal of shapes it cannot do; determinism run to run.
import numpy as np
import pytest

import cnnkit
from cnnkit import _C

from helpers import reference as R

F32, F64 = np.float32, np.float64
ONE = (1, 1)

# (N, C, K, H, W, padding, groups): H, W 1..13 (most not multiples of 4), every padding that gives P, Q >= 1.
CASES = [
    (1, 1, 1, 1, 1, 1, 1),
    (1, 1, 1, 3, 3, 0, 1),
    (2, 3, 5, 7, 9, 1, 1),
    (2, 4, 6, 13, 5, 0, 2),
    (1, 2, 2, 3, 3, 2, 1),
    (3, 8, 8, 12, 12, 1, 4),
    (1, 3, 2, 1, 13, 3, 1),
    (2, 2, 2, 6, 6, 5, 1),
    (1, 16, 16, 4, 4, 1, 1),
    (2, 6, 9, 11, 2, 2, 3),
    (1, 5, 3, 10, 8, 0, 1),
    (4, 4, 4, 5, 13, 1, 2),
    (1, 32, 48, 9, 7, 1, 1),
]


def _ids(c):
    return "N{}C{}K{}_{}x{}_p{}_g{}".format(*c)


def _data(case, dtype, seed=0):
    N, C, K, H, W, pad, g = case
    rng = np.random.default_rng(seed)
    P, Q = H + 2 * pad - 2, W + 2 * pad - 2
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    dy = rng.standard_normal((N, K, P, Q)).astype(dtype)
    return x, w, b, dy


def c_fwd(x, w, b, pad, g, alg="winograd"):
    N, K, P, Q = R.conv2d_out_shape(x.shape, w.shape, 1, pad, 1)
    y = np.full((N, K, P, Q), np.nan, x.dtype)
    _C.conv2d_fwd(x, w, b, y, ONE, (pad, pad), ONE, g, alg)
    return y


def c_bwd_data(dy, w, x_shape, pad, g, alg="winograd"):
    dx = np.full(x_shape, np.nan, dy.dtype)
    _C.conv2d_bwd_data(dy, w, dx, ONE, (pad, pad), ONE, g, alg)
    return dx


def c_bwd_weight(dy, x, w_shape, pad, g, alg="winograd", out=None, accumulate=False):
    dw = np.full(w_shape, np.nan, dy.dtype) if out is None else out
    _C.conv2d_bwd_weight(dy, x, dw, ONE, (pad, pad), ONE, g, accumulate, alg)
    return dw


def _tile_max(a, off_h, off_w, TH, TW, size):
    """(N, C, TH, TW): the largest |a| over each size x size tile, tile (th, tw) covering rows 4*th - off_h ..
    and columns 4*tw - off_w .. (zeros outside a)."""
    N, C, H, W = a.shape
    rows, cols = 4 * TH + size - 4, 4 * TW + size - 4
    buf = np.zeros((N, C, rows, cols))
    r0, c0 = max(0, off_h), max(0, off_w)               # where a's row/column 0 lands in buf
    sr, sc = max(0, -off_h), max(0, -off_w)             # a's first row/column inside buf
    nr, nc = min(H - sr, rows - r0), min(W - sc, cols - c0)
    if nr > 0 and nc > 0:
        buf[:, :, r0:r0 + nr, c0:c0 + nc] = np.abs(a[:, :, sr:sr + nr, sc:sc + nc])
    win = np.lib.stride_tricks.sliding_window_view(buf, (size, size), axis=(2, 3))[:, :, ::4, ::4]
    return win.max(axis=(-1, -2))


def _grouped(a_t, w_abs, groups):
    """out[n, k, t, u] = sum over the group's channels c of a_t[n, c, t, u] * w_abs[k, c] (w_abs (K, Cg))."""
    Cg, Kg = a_t.shape[1] // groups, w_abs.shape[0] // groups
    return np.concatenate([np.einsum("nctu,kc->nktu", a_t[:, g * Cg:(g + 1) * Cg], w_abs[g * Kg:(g + 1) * Kg])
                           for g in range(groups)], axis=1)


def _tile_scales(x, w, dy, pad, g):
    """The scale of Winograd's rounding error for every output of the three passes: the window sum of
    |w||x| with each |x| replaced by the largest |x| of the 6x6 input tile the output's 4x4 tile reads, and
    each |w| by the largest |w| of its 3x3 filter (for the weight gradient: the sum over tiles of 16 * the
    largest |dy| of the 4x4 tile * the largest |x| of the 6x6 tile). The transforms mix all 36 inputs of a
    tile and all 9 taps of a filter, so the error of an output follows its tile, not its own window: an
    output whose window lies in the padding is exactly 0 for im2col but carries its neighbours' rounding."""
    N, C, H, W = x.shape
    K = w.shape[0]
    P, Q = dy.shape[2:]
    wsum = 9 * np.abs(w.astype(F64)).max(axis=(2, 3))                  # (K, Cg)
    TH, TW = -(-P // 4), -(-Q // 4)
    xt = _tile_max(x, pad, pad, TH, TW, 6)                             # (N, C, TH, TW)
    s_fwd = _grouped(xt, wsum, g)                                      # (N, K, TH, TW)
    s_fwd = np.repeat(np.repeat(s_fwd, 4, axis=2), 4, axis=3)[:, :, :P, :Q]
    THx, TWx = -(-H // 4), -(-W // 4)
    dyt = _tile_max(dy, 2 - pad, 2 - pad, THx, TWx, 6)                 # (N, K, THx, TWx)
    Kg, Cg = K // g, C // g
    wt = np.concatenate([wsum[gi * Kg:(gi + 1) * Kg].T for gi in range(g)], axis=0)   # (C, Kg) per group rows
    s_bd = np.concatenate([np.einsum("nktu,ck->nctu", dyt[:, gi * Kg:(gi + 1) * Kg], wt[gi * Cg:(gi + 1) * Cg])
                           for gi in range(g)], axis=1)
    s_bd = np.repeat(np.repeat(s_bd, 4, axis=2), 4, axis=3)[:, :, :H, :W]
    dyo = _tile_max(dy, 0, 0, TH, TW, 4)                               # (N, K, TH, TW)
    s_bw = np.concatenate([16 * np.einsum("nktu,nctu->kc", dyo[:, gi * Kg:(gi + 1) * Kg], xt[:, gi * Cg:(gi + 1) * Cg])
                           for gi in range(g)], axis=0)
    return s_fwd, s_bd, s_bw[:, :, None, None]


def _rel_err(got, want, scale):
    return float(np.max(np.abs(got.astype(F64) - want) / np.maximum(scale, np.finfo(F64).tiny)))


# Measured worst |err| / tile scale (_tile_scales) over CASES (3 seeds) and the dynamic-range inputs below
# (10 seeds), 1 and 2 threads: float32 fwd 8.4e-7, bwd_data 4.7e-7, bwd_weight 4.0e-7 (im2col + GEMM on the
# same inputs: 3e-8); float64 1.6e-15. The bounds keep a margin of 3x (float32) and 6x (float64). Measured
# against the window sum of |w||x| instead (the scale of im2col's error), Winograd's float32 error reaches
# 1.2e-5 on these random inputs and has no bound at all where a window's sum is 0 (windows in the padding:
# exactly 0 for im2col) or tiny next to large neighbours (17x the window sum on dynamic-range inputs).
F32_BOUND = 2.5e-6
F64_BOUND = 1e-14


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_passes_match_reference(case, dtype):
    N, C, K, H, W, pad, g = case
    x, w, b, dy = _data(case, dtype)
    s_fwd, s_bd, s_bw = _tile_scales(x, w, dy, pad, g)
    bound = F32_BOUND if dtype == F32 else F64_BOUND
    y = c_fwd(x, w, b, pad, g)
    assert y.dtype == dtype and y.shape == (N, K, H + 2 * pad - 2, W + 2 * pad - 2)
    # the bias is outside the window sum: compare without it, then check it is added exactly once
    y0 = c_fwd(x, w, None, pad, g)
    assert _rel_err(y0, R.conv2d_fwd(x, w, padding=pad, groups=g), s_fwd) < bound
    np.testing.assert_allclose(y - y0, np.broadcast_to(b[None, :, None, None], y.shape), rtol=0,
                               atol=8 * np.finfo(dtype).eps * (np.abs(y0).max() + np.abs(b).max()))
    dx = c_bwd_data(dy, w, x.shape, pad, g)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert _rel_err(dx, R.conv2d_bwd_data(dy, w, x.shape, padding=pad, groups=g), s_bd) < bound
    dw = c_bwd_weight(dy, x, w.shape, pad, g)
    assert dw.dtype == dtype and dw.shape == w.shape
    assert _rel_err(dw, R.conv2d_bwd_weight(dy, x, w.shape, padding=pad, groups=g), s_bw) < bound


def test_random_geometries_float64():
    # 60 seeded geometries: every edge case of the tile gather (planes narrower than a tile, windows
    # crossing both edges, backward data with padding > 2, i.e. a negative offset) against the reference.
    rng = np.random.default_rng(7)
    for _ in range(60):
        g = int(rng.choice([1, 2, 3]))
        C, K = g * int(rng.integers(1, 4)), g * int(rng.integers(1, 4))
        H, W, pad, N = (int(v) for v in (rng.integers(1, 14), rng.integers(1, 14), rng.integers(0, 5),
                                         rng.integers(1, 3)))
        if H + 2 * pad < 3 or W + 2 * pad < 3:
            continue
        case = (N, C, K, H, W, pad, g)
        x, w, b, dy = _data(case, F64, seed=int(rng.integers(1 << 30)))
        err = [np.abs(c_fwd(x, w, b, pad, g) - R.conv2d_fwd(x, w, b, padding=pad, groups=g)).max(),
               np.abs(c_bwd_data(dy, w, x.shape, pad, g) - R.conv2d_bwd_data(dy, w, x.shape, padding=pad,
                                                                             groups=g)).max(),
               np.abs(c_bwd_weight(dy, x, w.shape, pad, g) - R.conv2d_bwd_weight(dy, x, w.shape, padding=pad,
                                                                                 groups=g)).max()]
        assert max(err) < 1e-12, (case, err)


@pytest.mark.parametrize("case", [(2, 3, 4, 5, 301, 1, 1), (1, 2, 3, 70, 9, 2, 1), (40, 2, 2, 6, 6, 1, 2),
                                  (37, 2, 3, 8, 8, 1, 1), (21, 2, 2, 16, 16, 1, 1), (3, 1, 2, 32, 32, 1, 1),
                                  (50, 2, 2, 7, 7, 1, 1), (23, 3, 2, 12, 12, 1, 1), (9, 2, 2, 6, 10, 3, 1)], ids=_ids)
def test_wide_tall_and_many_planes_float64(case):
    # a tile row longer than a chunk (301 columns), many tile rows, many small planes per block (padded copies,
    # written plane by plane; 12x12's 9 tiles do not divide a chunk: tile by tile), padding 3 (negative offset)
    N, C, K, H, W, pad, g = case
    x, w, b, dy = _data(case, F64)
    for threads in (1, 2):
        old = cnnkit.get_num_threads()
        try:
            cnnkit.set_num_threads(threads)
            np.testing.assert_allclose(c_fwd(x, w, b, pad, g), R.conv2d_fwd(x, w, b, padding=pad, groups=g),
                                       rtol=0, atol=1e-12)
            np.testing.assert_allclose(c_bwd_data(dy, w, x.shape, pad, g),
                                       R.conv2d_bwd_data(dy, w, x.shape, padding=pad, groups=g), rtol=0, atol=1e-12)
            np.testing.assert_allclose(c_bwd_weight(dy, x, w.shape, pad, g),
                                       R.conv2d_bwd_weight(dy, x, w.shape, padding=pad, groups=g), rtol=0, atol=1e-11)
        finally:
            cnnkit.set_num_threads(old)


@pytest.mark.parametrize("case", CASES[2:6], ids=_ids)
def test_float32_error_bound_on_large_dynamic_range(case):
    # Magnitudes spread over 8 decades (10**-4 .. 10**4) in x, w and dy: the transforms mix the values of
    # a tile, so small outputs next to large inputs are where Winograd loses most.
    N, C, K, H, W, pad, g = case
    rng = np.random.default_rng(1)

    def spread(shape):
        return (rng.standard_normal(shape) * 10.0 ** rng.uniform(-4, 4, shape)).astype(F32)

    x, w = spread((N, C, H, W)), spread((K, C // g, 3, 3))
    dy = spread((N, K, H + 2 * pad - 2, W + 2 * pad - 2))
    s_fwd, s_bd, s_bw = _tile_scales(x, w, dy, pad, g)
    assert _rel_err(c_fwd(x, w, None, pad, g), R.conv2d_fwd(x, w, padding=pad, groups=g), s_fwd) < F32_BOUND
    assert _rel_err(c_bwd_data(dy, w, x.shape, pad, g),
                           R.conv2d_bwd_data(dy, w, x.shape, padding=pad, groups=g), s_bd) < F32_BOUND
    assert _rel_err(c_bwd_weight(dy, x, w.shape, pad, g),
                           R.conv2d_bwd_weight(dy, x, w.shape, padding=pad, groups=g), s_bw) < F32_BOUND


@pytest.mark.parametrize("dtype", [F32, F64])
def test_bwd_weight_accumulates(dtype):
    case = (2, 4, 6, 9, 7, 1, 2)
    x, w, _, dy = _data(case, dtype)
    fresh = c_bwd_weight(dy, x, w.shape, 1, 2)
    base = np.random.default_rng(5).standard_normal(w.shape).astype(dtype)
    acc = base.copy()
    c_bwd_weight(dy, x, w.shape, 1, 2, out=acc, accumulate=True)
    np.testing.assert_allclose(acc, base + fresh, rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps * 10)
    # accumulate=False overwrites whatever was there
    junk = np.full(w.shape, 1e30, dtype)
    assert np.array_equal(c_bwd_weight(dy, x, w.shape, 1, 2, out=junk), fresh)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_empty_batch(dtype):
    x, w = np.zeros((0, 3, 5, 5), dtype), np.ones((4, 3, 3, 3), dtype)
    assert c_fwd(x, w, None, 1, 1).shape == (0, 4, 5, 5)
    assert c_bwd_data(np.zeros((0, 4, 5, 5), dtype), w, x.shape, 1, 1).shape == x.shape
    dw = c_bwd_weight(np.zeros((0, 4, 5, 5), dtype), x, w.shape, 1, 1)
    assert np.array_equal(dw, np.zeros(w.shape))
    acc = np.full(w.shape, 2.0, dtype)
    c_bwd_weight(np.zeros((0, 4, 5, 5), dtype), x, w.shape, 1, 1, out=acc, accumulate=True)
    assert np.array_equal(acc, np.full(w.shape, 2.0))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_deterministic_run_to_run(threads):
    case = (8, 16, 16, 20, 20, 1, 1)   # big enough to use every thread and several blocks
    x, w, b, dy = _data(case, F32)
    old = cnnkit.get_num_threads()
    try:
        cnnkit.set_num_threads(threads)
        first = (c_fwd(x, w, b, 1, 1), c_bwd_data(dy, w, x.shape, 1, 1), c_bwd_weight(dy, x, w.shape, 1, 1))
        for _ in range(3):
            again = (c_fwd(x, w, b, 1, 1), c_bwd_data(dy, w, x.shape, 1, 1), c_bwd_weight(dy, x, w.shape, 1, 1))
            assert all(np.array_equal(a, b_) for a, b_ in zip(first, again))
    finally:
        cnnkit.set_num_threads(old)


@pytest.mark.parametrize("kernel, stride, dilation, why", [
    ((5, 5), ONE, ONE, r"needs a 3x3 kernel, got \(5, 5\)"),
    ((3, 1), ONE, ONE, r"needs a 3x3 kernel, got \(3, 1\)"),
    ((3, 3), (2, 2), ONE, r"needs stride 1, got \(2, 2\)"),
    ((3, 3), (1, 2), ONE, r"needs stride 1, got \(1, 2\)"),
    ((3, 3), ONE, (2, 1), r"needs dilation 1, got \(2, 1\)"),
])
def test_c_refuses_shapes_it_cannot_do(kernel, stride, dilation, why):
    x, w = np.ones((1, 2, 9, 9), F32), np.ones((3, 2) + kernel, F32)
    N, K, P, Q = R.conv2d_out_shape(x.shape, w.shape, stride, 1, dilation)
    y, dy = np.empty((N, K, P, Q), F32), np.ones((N, K, P, Q), F32)
    with pytest.raises(ValueError, match=r"conv2d_fwd: algorithm 'winograd' " + why):
        _C.conv2d_fwd(x, w, None, y, stride, ONE, dilation, 1, "winograd")
    with pytest.raises(ValueError, match=r"conv2d_bwd_data: algorithm 'winograd' " + why):
        _C.conv2d_bwd_data(dy, w, np.empty_like(x), stride, ONE, dilation, 1, "winograd")
    with pytest.raises(ValueError, match=r"conv2d_bwd_weight: algorithm 'winograd' " + why):
        _C.conv2d_bwd_weight(dy, x, np.empty_like(w), stride, ONE, dilation, 1, False, "winograd")


def test_c_refuses_unknown_algorithm():
    x, w = np.ones((1, 2, 5, 5), F32), np.ones((3, 2, 3, 3), F32)
    with pytest.raises(ValueError, match=r"conv2d_fwd: algorithm must be 'gemm' or 'winograd', got 'fft'"):
        _C.conv2d_fwd(x, w, None, np.empty((1, 3, 3, 3), F32), ONE, (0, 0), ONE, 1, "fft")


def test_c_default_is_gemm():
    x, w, b, _ = _data((2, 3, 4, 6, 6, 1, 1), F32)
    y = np.empty((2, 4, 6, 6), F32)
    _C.conv2d_fwd(x, w, b, y, ONE, ONE, ONE, 1)
    assert np.array_equal(y, c_fwd(x, w, b, 1, 1, alg="gemm"))


# ---------------------------------------------------------------- the algorithm choice (ops, layer, global)

from cnnkit import ops  # noqa: E402

from helpers import fakecupy  # noqa: E402


@pytest.fixture
def restore_algorithm():
    old = cnnkit.get_conv_algorithm()
    yield
    cnnkit.set_conv_algorithm(old)


def _ops_passes(x, w, b, dy, pad, g, algorithm):
    hp = dict(padding=pad, groups=g, algorithm=algorithm)
    return (ops.conv2d_fwd(x, w, b, **hp), ops.conv2d_bwd_data(dy, w, x.shape, **hp),
            ops.conv2d_bwd_weight(dy, x, w.shape, **hp))


def _same(a, b_):
    return all(u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v) for u, v in zip(a, b_))


def test_global_setting_default_and_bad_values(restore_algorithm):
    assert cnnkit.get_conv_algorithm() == "auto" and ops.get_conv_algorithm() == "auto"
    for alg in ("gemm", "winograd", "auto"):
        cnnkit.set_conv_algorithm(alg)
        assert cnnkit.get_conv_algorithm() == alg
    with pytest.raises(ValueError, match=r"set_conv_algorithm: algorithm must be one of 'auto', 'gemm', "
                                         r"'winograd', got 'Winograd'"):
        cnnkit.set_conv_algorithm("Winograd")
    with pytest.raises(TypeError, match=r"set_conv_algorithm: algorithm must be one of 'auto', 'gemm', "
                                        r"'winograd', got NoneType"):
        cnnkit.set_conv_algorithm(None)
    assert cnnkit.get_conv_algorithm() == "auto"


@pytest.mark.parametrize("fn", ["conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_weight"])
def test_ops_refuse_bad_algorithm_values(fn):
    x, w, b, dy = _data((1, 2, 3, 5, 5, 1, 1), F32)
    call = {"conv2d_fwd": lambda a: ops.conv2d_fwd(x, w, padding=1, algorithm=a),
            "conv2d_bwd_data": lambda a: ops.conv2d_bwd_data(dy, w, x.shape, padding=1, algorithm=a),
            "conv2d_bwd_weight": lambda a: ops.conv2d_bwd_weight(dy, x, w.shape, padding=1, algorithm=a)}[fn]
    allowed = r"must be one of 'auto', 'gemm', 'winograd' or None"
    with pytest.raises(ValueError, match=rf"{fn}: algorithm {allowed}, got 'fft'"):
        call("fft")
    with pytest.raises(TypeError, match=rf"{fn}: algorithm {allowed}, got int"):
        call(1)


@pytest.mark.parametrize("kernel, stride, dilation, why", [
    (5, 1, 1, r"needs a 3x3 kernel, got \(5, 5\)"),
    (3, 2, 1, r"needs stride 1, got \(2, 2\)"),
    (3, 1, 2, r"needs dilation 1, got \(2, 2\)"),
])
def test_explicit_winograd_refuses_other_shapes_global_falls_back(kernel, stride, dilation, why, restore_algorithm):
    x = _data((2, 16, 16, 11, 11, 1, 1), F32)[0]
    w = np.random.default_rng(2).standard_normal((16, 16, kernel, kernel)).astype(F32)
    hp = dict(stride=stride, padding=1, dilation=dilation)
    y = ops.conv2d_fwd(x, w, **hp, algorithm="gemm")
    dy = np.ones_like(y)
    with pytest.raises(ValueError, match=r"conv2d_fwd: algorithm 'winograd' " + why):
        ops.conv2d_fwd(x, w, **hp, algorithm="winograd")
    with pytest.raises(ValueError, match=r"conv2d_bwd_data: algorithm 'winograd' " + why):
        ops.conv2d_bwd_data(dy, w, x.shape, **hp, algorithm="winograd")
    with pytest.raises(ValueError, match=r"conv2d_bwd_weight: algorithm 'winograd' " + why):
        ops.conv2d_bwd_weight(dy, x, w.shape, **hp, algorithm="winograd")
    # the global "winograd" means "wherever it applies": these shapes run gemm, bit for bit
    cnnkit.set_conv_algorithm("winograd")
    assert np.array_equal(ops.conv2d_fwd(x, w, **hp), y)
    with pytest.raises(ValueError, match=r"Conv2d: algorithm 'winograd' needs a 3x3 kernel, stride 1 and "
                                         r"dilation 1, got kernel_size"):
        cnnkit.Conv2d(16, 16, kernel, stride=stride, dilation=dilation, algorithm="winograd")


# N=8 on 9x10 planes is 8 * 3 * 3 = 72 output tiles; N=7 is 63, below the 64 that auto asks for.
@pytest.mark.parametrize("N, C, K, groups, kernel, stride, expect", [
    (8, 16, 16, 1, 3, 1, "winograd"),
    (8, 32, 64, 2, 3, 1, "winograd"),     # 16 and 32 channels per group
    (7, 16, 16, 1, 3, 1, "gemm"),         # too few tiles
    (8, 160, 16, 1, 3, 1, "gemm"),        # fewer tiles than half the input channels
    (8, 15, 16, 1, 3, 1, "gemm"),
    (8, 16, 15, 1, 3, 1, "gemm"),
    (8, 32, 32, 4, 3, 1, "gemm"),         # 8 channels per group
    (8, 16, 16, 1, 5, 1, "gemm"), (8, 16, 16, 1, 3, 2, "gemm"),
])
def test_auto_rule(N, C, K, groups, kernel, stride, expect, restore_algorithm):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, C, 9, 10)).astype(F32)
    w = rng.standard_normal((K, C // groups, kernel, kernel)).astype(F32)
    b = rng.standard_normal(K).astype(F32)
    hp = dict(stride=stride, padding=1, groups=groups)
    y = ops.conv2d_fwd(x, w, b, **hp)
    dy = rng.standard_normal(y.shape).astype(F32)
    passes = lambda a: (ops.conv2d_fwd(x, w, b, **hp, algorithm=a),  # noqa: E731
                        ops.conv2d_bwd_data(dy, w, x.shape, **hp, algorithm=a),
                        ops.conv2d_bwd_weight(dy, x, w.shape, **hp, algorithm=a))
    assert _same(passes(None), passes(expect)) and _same(passes("auto"), passes(expect))
    if expect == "winograd":    # and it is not the same as gemm (otherwise the test would prove nothing)
        assert not np.array_equal(passes("gemm")[0], passes("winograd")[0])
    cnnkit.set_conv_algorithm("gemm")
    assert _same(passes(None), passes("gemm"))


@pytest.mark.parametrize("case", [CASES[3], CASES[5], CASES[9], CASES[12]], ids=_ids)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_ops_match_torch(case, dtype):
    torch = pytest.importorskip("torch")
    N, C, K, H, W, pad, g = case
    x, w, b, dy = _data(case, dtype, seed=4)
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=pad, groups=g)
    ty.backward(torch.from_numpy(dy))
    y, dx, dw = _ops_passes(x, w, b, dy, pad, g, "winograd")
    s_fwd, s_bd, s_bw = _tile_scales(x, w, dy, pad, g)
    bound = F32_BOUND if dtype == F32 else F64_BOUND
    # torch's own float32 error (a few 1e-8 of these scales) is far below the bound
    assert _rel_err(y - b[None, :, None, None], ty.detach().numpy().astype(F64) - b[None, :, None, None], s_fwd) < bound
    assert _rel_err(dx, tx.grad.numpy().astype(F64), s_bd) < bound
    assert _rel_err(dw, tw.grad.numpy().astype(F64), s_bw) < bound


BAD_CALLS = [
    lambda a: ops.conv2d_fwd(np.ones((1, 4, 6, 6), F32), np.ones((4, 2, 3, 3), F32), algorithm=a),
    lambda a: ops.conv2d_fwd(np.ones((1, 4, 6, 6), F32), np.ones((4, 4, 3, 3), F64), algorithm=a),
    lambda a: ops.conv2d_fwd(np.ones((1, 4, 2, 2), F32), np.ones((4, 4, 3, 3), F32), algorithm=a),
    lambda a: ops.conv2d_fwd(np.ones((1, 4, 6, 6), F32), np.ones((4, 4, 3, 3), F32), np.ones(3, F32), algorithm=a),
    lambda a: ops.conv2d_bwd_data(np.ones((1, 4, 5, 5), F32), np.ones((4, 4, 3, 3), F32), (1, 4, 6, 6), algorithm=a),
    lambda a: ops.conv2d_bwd_weight(np.ones((1, 4, 4, 4), F32), np.ones((1, 4, 6, 6), F64), (4, 4, 3, 3),
                                    algorithm=a),
    lambda a: ops.conv2d_bwd_weight(np.ones((1, 4, 4, 4), F32), np.ones((1, 4, 6, 6), F32), (4, 4, 3, 3),
                                    accumulate=True, algorithm=a),
    lambda a: ops.conv2d_fwd(np.ones((1, 4, 6, 6), F32), np.ones((4, 4, 3, 3), F32), out=np.ones((1, 4, 4, 3), F32),
                             algorithm=a),
]


@pytest.mark.parametrize("i", range(len(BAD_CALLS)))
def test_choice_never_changes_error_messages(i):
    msgs = set()
    for alg in (None, "auto", "gemm", "winograd"):
        with pytest.raises((TypeError, ValueError)) as e:
            BAD_CALLS[i](alg)
        msgs.add((type(e.value), str(e.value)))
    assert len(msgs) == 1, msgs


def test_layer_algorithm_config_and_bad_values():
    layer = cnnkit.Conv2d(4, 6, 3, padding=1, algorithm="winograd", seed=0)
    assert layer.config()["algorithm"] == "winograd"
    assert cnnkit.Conv2d(4, 6, 3).config()["algorithm"] is None
    clone = cnnkit.Conv2d(**layer.config())
    assert clone.algorithm == "winograd"
    with pytest.raises(ValueError, match=r"Conv2d: algorithm must be one of 'auto', 'gemm', 'winograd' or None, "
                                         r"got 'wino'"):
        cnnkit.Conv2d(4, 6, 3, algorithm="wino")


@pytest.mark.parametrize("dtype", [F32, F64])
def test_layer_passes_follow_its_algorithm(dtype, restore_algorithm):
    x, _, _, _ = _data((2, 4, 6, 9, 7, 1, 1), dtype)
    out = {}
    for alg in ("gemm", "winograd"):
        layer = cnnkit.Conv2d(4, 6, 3, padding=1, algorithm=alg, seed=0, dtype=dtype)
        y = layer.forward(x)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
        dx = layer.backward(dy)
        out[alg] = (y, dx, layer.weight.grad.copy())
        w, b = layer.weight.data, layer.bias.data
    # channels below the "auto" threshold: a default layer runs gemm ...
    layer = cnnkit.Conv2d(4, 6, 3, padding=1, seed=0, dtype=dtype)
    y = layer.forward(x)
    dx = layer.backward(dy)
    assert _same((y, dx, layer.weight.grad), out["gemm"])
    # ... unless the process-wide setting says winograd
    cnnkit.set_conv_algorithm("winograd")
    layer = cnnkit.Conv2d(4, 6, 3, padding=1, seed=0, dtype=dtype)
    y = layer.forward(x)
    dx = layer.backward(dy)
    assert _same((y, dx, layer.weight.grad), out["winograd"])
    assert _same(out["winograd"], _ops_passes(x, w, b, dy, 1, 1, "winograd"))


def test_gradcheck_float64_winograd():
    model = cnnkit.Sequential(cnnkit.Conv2d(3, 4, 3, padding=1, algorithm="winograd", seed=0), cnnkit.ReLU(),
                              cnnkit.Conv2d(4, 2, 3, padding=2, groups=2, algorithm="winograd", seed=1))
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    report = cnnkit.gradcheck(model, x, max_coords=48)
    assert report.ok and all(r["max_rel_err"] < 1e-6 for r in report.rows)


def test_device_arrays_ignore_the_global_setting_and_refuse_explicit_winograd(monkeypatch, restore_algorithm):
    cp = fakecupy.install(monkeypatch)
    x, w, b, _ = _data((2, 16, 16, 9, 9, 1, 1), F32)
    xd, wd, bd = cp.asarray(x), cp.asarray(w), cp.asarray(b)
    cnnkit.set_conv_algorithm("winograd")
    assert np.array_equal(ops.conv2d_fwd(xd, wd, bd, padding=1).get(), ops.conv2d_fwd(x, w, b, padding=1,
                                                                                        algorithm="gemm"))
    with pytest.raises(ValueError, match=r"conv2d_fwd: algorithm 'winograd' is CPU-only; CuPy arrays run the "
                                         r"CUDA implicit-GEMM kernels"):
        ops.conv2d_fwd(xd, wd, bd, padding=1, algorithm="winograd")


def test_saved_model_keeps_the_layer_algorithm(tmp_path):
    model = cnnkit.Sequential(cnnkit.Conv2d(3, 4, 3, padding=1, algorithm="winograd", seed=0), cnnkit.ReLU(),
                              cnnkit.Conv2d(4, 2, 3, algorithm="gemm", seed=1))
    model.save(tmp_path / "m.npz")
    loaded = cnnkit.load(tmp_path / "m.npz")
    assert [m.algorithm for m in loaded.modules() if isinstance(m, cnnkit.Conv2d)] == ["winograd", "gemm"]
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6)).astype(F32)
    assert np.array_equal(loaded.forward(x), model.forward(x))
