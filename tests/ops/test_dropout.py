# dropout: bad inputs (ops and _C), the numpy Philox-4x32-10 against Random123's known answers, cnnkit's
# mask and output bit for bit against the reference (hypothesis), the mask as a pure function of
# (seed, offset, index), keep fraction, p=0 identity, central differences, N=0, 1 vs 2 threads, and the
# inverted scaling against torch.native_dropout (whose mask itself differs: torch uses its own generator).
# Tests taking `device` run on the CPU, the CuPy stand-in and a GPU (tests/ops/conftest.py).
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cnnkit import _C, ops

from helpers import reference as R

F32, F64 = np.float32, np.float64

X = np.linspace(-1, 1, 24).reshape(2, 3, 4)
Y, MASK = ops.dropout_fwd(X, 0.5, seed=1)
RO = np.zeros(X.shape)
RO.flags.writeable = False


# ---------------------------------------------------------------- 1. bad inputs

BAD = [
    ("x-list", lambda: ops.dropout_fwd(X.tolist(), 0.5, 0), TypeError, r"dropout_fwd: x must be a numpy\.ndarray, got list"),
    ("x-int", lambda: ops.dropout_fwd(np.arange(4), 0.5, 0), TypeError, r"dropout_fwd: x must be float32 or float64, got int64"),
    ("x-noncontig", lambda: ops.dropout_fwd(X[:, :, ::2], 0.5, 0), ValueError, r"dropout_fwd: x must be C-contiguous"),
    ("p-1", lambda: ops.dropout_fwd(X, 1.0, 0), ValueError, r"dropout_fwd: p \(the drop probability\) must be in \[0, 1\), got 1\.0"),
    ("p-neg", lambda: ops.dropout_fwd(X, -0.1, 0), ValueError, r"dropout_fwd: p \(the drop probability\) must be in \[0, 1\), got -0\.1"),
    ("p-nan", lambda: ops.dropout_fwd(X, float("nan"), 0), ValueError, r"dropout_fwd: p .* got nan"),
    ("p-inf", lambda: ops.dropout_fwd(X, float("inf"), 0), ValueError, r"dropout_fwd: p .* got inf"),
    ("p-above-1", lambda: ops.dropout_fwd(X, 1.5, 0), ValueError, r"dropout_fwd: p .* got 1\.5"),
    ("p-str", lambda: ops.dropout_fwd(X, "0.5", 0), TypeError, r"dropout_fwd: p must be a float, got str"),
    ("p-bool", lambda: ops.dropout_fwd(X, True, 0), TypeError, r"dropout_fwd: p must be a float, got bool"),
    ("seed-float", lambda: ops.dropout_fwd(X, 0.5, 1.5), TypeError, r"dropout_fwd: seed must be an int, got float"),
    ("seed-none", lambda: ops.dropout_fwd(X, 0.5, None), TypeError, r"dropout_fwd: seed must be an int, got NoneType"),
    ("seed-neg", lambda: ops.dropout_fwd(X, 0.5, -1), ValueError, r"dropout_fwd: seed must be >= 0, got -1"),
    ("seed-2**64", lambda: ops.dropout_fwd(X, 0.5, 2**64), ValueError, r"dropout_fwd: seed and offset must be < 2\*\*64"),
    ("offset-neg", lambda: ops.dropout_fwd(X, 0.5, 0, offset=-3), ValueError, r"dropout_fwd: offset must be >= 0, got -3"),
    ("offset-str", lambda: ops.dropout_fwd(X, 0.5, 0, offset="0"), TypeError, r"dropout_fwd: offset must be an int, got str"),
    # dropout_bwd
    ("bwd-mask-bool", lambda: ops.dropout_bwd(Y, MASK.astype(bool), 0.5), TypeError, r"dropout_bwd: mask must have dtype uint8 \(no silent casts\), got bool"),
    ("bwd-mask-float", lambda: ops.dropout_bwd(Y, MASK.astype(F64), 0.5), TypeError, r"dropout_bwd: mask must have dtype uint8"),
    ("bwd-mask-int8", lambda: ops.dropout_bwd(Y, MASK.astype(np.int8), 0.5), TypeError, r"dropout_bwd: mask must have dtype uint8"),
    ("bwd-mask-shape", lambda: ops.dropout_bwd(Y, MASK.reshape(6, 4), 0.5), ValueError, r"dropout_bwd: mask must have the shape of dy \(2, 3, 4\), got \(6, 4\)"),
    ("bwd-mask-noncontig", lambda: ops.dropout_bwd(Y[:, :, ::2].copy(), MASK[:, :, ::2], 0.5), ValueError, r"dropout_bwd: mask must be C-contiguous"),
    ("bwd-dy-int", lambda: ops.dropout_bwd(MASK, MASK, 0.5), TypeError, r"dropout_bwd: dy must be float32 or float64, got uint8"),
    ("bwd-p-1", lambda: ops.dropout_bwd(Y, MASK, 1.0), ValueError, r"dropout_bwd: p \(the drop probability\) must be in \[0, 1\)"),
    ("bwd-p-nan", lambda: ops.dropout_bwd(Y, MASK, float("nan")), ValueError, r"dropout_bwd: p .* got nan"),
]


@pytest.mark.parametrize("call, exc, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


_M = np.empty(X.shape, np.uint8)
C_BAD = [
    ("p-1", lambda: _C.dropout_fwd(X, np.empty(X.shape), _M, 1.0, 0, 0), ValueError, r"dropout_fwd: p \(drop probability\) must be in \[0, 1\), got 1"),
    ("p-nan", lambda: _C.dropout_fwd(X, np.empty(X.shape), _M, float("nan"), 0, 0), ValueError, r"dropout_fwd: p \(drop probability\) must be in \[0, 1\)"),
    ("mask-bool", lambda: _C.dropout_fwd(X, np.empty(X.shape), np.empty(X.shape, bool), 0.5, 0, 0), TypeError, r"dropout_fwd: mask must have dtype uint8"),
    ("y-shape", lambda: _C.dropout_fwd(X, np.empty((24,)), _M, 0.5, 0, 0), ValueError, r"dropout_fwd: y must have the shape of x \(2, 3, 4\), got \(24,\)"),
    ("y-readonly", lambda: _C.dropout_fwd(X, RO, _M, 0.5, 0, 0), ValueError, r"dropout_fwd: y must be writable"),
    ("seed-neg", lambda: _C.dropout_fwd(X, np.empty(X.shape), _M, 0.5, -1, 0), TypeError, r"incompatible function arguments"),
    ("bwd-dx-mixed", lambda: _C.dropout_bwd(Y, MASK, np.empty(X.shape, F32), 0.5), TypeError, r"dropout_bwd: dx must have dtype float64"),
]


@pytest.mark.parametrize("call, exc, match", [b[1:] for b in C_BAD], ids=[b[0] for b in C_BAD])
def test_C_checks_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- 2. Philox and the mask rule

@pytest.mark.parametrize("ctr, key, want", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
], ids=["zeros", "ones", "pi"])
def test_reference_philox_known_answers(ctr, key, want):
    assert tuple(int(v) for v in R.philox4x32_10(ctr, key)) == want


def test_hand_mask_from_known_answer():
    # seed 0, offset 0: elements 0..3 draw block 0 = Philox((0,0,0,0), (0,0)), the first vector above.
    # p=0.5 -> threshold 2^31: 0x6627e8d5 is below (dropped), the other three are above (kept).
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y, mask = ops.dropout_fwd(x, 0.5, seed=0, offset=0)
    np.testing.assert_array_equal(mask, [0, 1, 1, 1])
    np.testing.assert_array_equal(y, [0, 4, 6, 8])
    # p=0.75 -> threshold 0xC0000000: only 0xe169c58d clears it; the scale is 4.
    y, mask = ops.dropout_fwd(x.astype(F32), 0.75, seed=0, offset=0)
    np.testing.assert_array_equal(mask, [0, 1, 0, 0])
    np.testing.assert_array_equal(y, np.array([0, 8, 0, 0], F32))
    np.testing.assert_array_equal(ops.dropout_bwd(np.ones(4, F32), mask, 0.75), np.array([0, 4, 0, 0], F32))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_hand_dropped_non_finite_values_stay_visible(device, dtype):
    # Elements 0..3 of seed 0 / offset 0 at p=0.5: mask [0, 1, 1, 1] (see above). y = x * mask * scale as
    # torch computes it, so a dropped NaN or Inf gives NaN and a dropped negative gives -0.0.
    for x0, want in [(np.nan, np.nan), (np.inf, np.nan), (-np.inf, np.nan), (-3.0, -0.0), (3.0, 0.0)]:
        y, mask = ops.dropout_fwd(device.asarray(np.array([x0, 1, np.nan, -np.inf], dtype)), 0.5, seed=0)
        y, mask = device.host(y), device.host(mask)
        np.testing.assert_array_equal(mask, [0, 1, 1, 1])
        np.testing.assert_array_equal(y, np.array([want, 2, np.nan, -np.inf], dtype))
        assert np.signbit(y[0]) == np.signbit(want) or np.isnan(want)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_p_zero_is_identity(dtype, rng):
    x = rng.standard_normal((3, 5, 7)).astype(dtype)
    x[0, 0, 0] = np.nan
    y, mask = ops.dropout_fwd(x, 0.0, seed=123)
    assert y.tobytes() == x.tobytes()
    assert mask.dtype == np.uint8 and (mask == 1).all()
    assert ops.dropout_bwd(x, mask, 0.0).tobytes() == x.tobytes()


_P = st.one_of(st.sampled_from([0.0, 0.5, 0.1, 0.9, 0.123, 2.0**-32, 0.5 - 2.0**-33, 1 - 2.0**-32, 1 - 2.0**-50]),
               st.floats(0.0, 1.0, exclude_max=True))


def _bits(a):
    """The bytes of `a` with every NaN made the same NaN: signed zeros still count, NaN payloads do not."""
    return np.where(np.isnan(a), np.array(np.nan, a.dtype), a).tobytes()


def _with_specials(g, shape, dtype, frac):
    x = g.standard_normal(shape).astype(dtype)
    where = g.random(shape) < frac
    x[where] = g.choice(np.array([np.nan, np.inf, -np.inf, -0.0, 0.0], dtype), where.sum())
    return x


@settings(max_examples=200, deadline=None)
@given(shape=st.lists(st.integers(0, 9), min_size=1, max_size=4), p=_P, seed=st.integers(0, 2**64 - 1),
       offset=st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)), dtype=st.sampled_from([F32, F64]),
       specials=st.sampled_from([0.0, 0.1]), data_seed=st.integers(0, 2**32 - 1))
def test_dropout_matches_reference_bit_for_bit(shape, p, seed, offset, dtype, specials, data_seed):
    g = np.random.default_rng(data_seed)
    x = _with_specials(g, shape, dtype, specials)
    y, mask = ops.dropout_fwd(x, p, seed, offset)
    y_ref, mask_ref = R.dropout_fwd(x, p, seed, offset)
    assert mask.dtype == np.uint8 and mask.shape == x.shape and y.dtype == dtype
    np.testing.assert_array_equal(mask, mask_ref)
    assert _bits(y) == _bits(y_ref)
    dy = _with_specials(g, shape, dtype, specials)
    assert _bits(ops.dropout_bwd(dy, mask, p)) == _bits(R.dropout_bwd(dy, mask, p))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 100), p=_P, dtype=st.sampled_from([F32, F64]), data_seed=st.integers(0, 2**32 - 1))
def test_dropout_bwd_any_nonzero_mask_byte_counts_as_kept(n, p, dtype, data_seed):
    # The header's contract: dx = dy * (mask != 0) * scale, whatever the non-zero byte is (a mask may
    # come from elsewhere, e.g. a bool array viewed as uint8 or a sum of masks).
    g = np.random.default_rng(data_seed)
    dy = g.standard_normal(n).astype(dtype)
    mask = g.integers(0, 4, n).astype(np.uint8)
    assert _bits(ops.dropout_bwd(dy, mask, p)) == _bits(R.dropout_bwd(dy, mask, p))


def test_different_seeds_and_offsets_give_different_masks():
    # Every pair differs in one input to Philox, including the high 32-bit words of seed and offset.
    x = np.ones(4096, F32)
    keys = {"base": (7, 0), "offset+1": (7, 1), "offset+2**32": (7, 2**32), "seed+1": (8, 0),
            "seed+2**32": (7 + 2**32, 0), "numpy-seed": (np.uint64(2**64 - 1), np.int64(3))}
    masks = {name: ops.dropout_fwd(x, 0.5, seed, offset)[1] for name, (seed, offset) in keys.items()}
    for name, (seed, offset) in keys.items():
        np.testing.assert_array_equal(masks[name], R.dropout_mask(x.shape, 0.5, int(seed), int(offset)))
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            # independent masks disagree on about half the elements (0.5 +- 0.008 here)
            assert (masks[a] != masks[b]).mean() > 0.4, (a, b)


def test_mask_is_a_pure_function_of_the_index():
    big = np.ones(1001, F64)
    _, full = ops.dropout_fwd(big, 0.3, seed=99, offset=5)
    for n in (1, 2, 3, 4, 5, 7, 13, 500, 1000):
        _, part = ops.dropout_fwd(np.ones(n, F64), 0.3, seed=99, offset=5)
        np.testing.assert_array_equal(part, full[:n])
    # the shape does not matter, only the flat index; nor does the dtype
    _, shaped = ops.dropout_fwd(np.ones((7, 11, 13), F32), 0.3, seed=99, offset=5)
    _, flat = ops.dropout_fwd(np.ones(7 * 11 * 13, F64), 0.3, seed=99, offset=5)
    np.testing.assert_array_equal(shaped.reshape(-1), flat)
    # and a second call gives the same mask
    np.testing.assert_array_equal(ops.dropout_fwd(big, 0.3, seed=99, offset=5)[1], full)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.999])
def test_keep_fraction_within_5_sigma(p):
    n = 200_003
    _, mask = ops.dropout_fwd(np.ones(n, F32), p, seed=2024, offset=3)
    kept = int(mask.sum())
    assert abs(kept - n * (1 - p)) <= 5 * math.sqrt(n * p * (1 - p)), kept


# ---------------------------------------------------------------- 3. central differences (fixed mask)

def test_dropout_central_differences(rng):
    x = rng.standard_normal((3, 4, 5))
    p, seed, offset = 0.4, 11, 2
    _, mask = ops.dropout_fwd(x, p, seed, offset)
    assert 0 < mask.sum() < mask.size
    dy = rng.standard_normal(x.shape)
    num = R.numeric_grad(lambda v: ops.dropout_fwd(v, p, seed, offset)[0], x, dy)
    np.testing.assert_allclose(ops.dropout_bwd(dy, mask, p), num, rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------- zero-size batch and threads

@pytest.mark.parametrize("dtype", [F32, F64])
def test_zero_batch(device, dtype):
    x = device.asarray(np.zeros((0, 3, 5, 5), dtype))
    y, mask = ops.dropout_fwd(x, 0.5, seed=1)
    assert y.shape == mask.shape == x.shape and y.dtype == dtype and mask.dtype == np.uint8
    dx = ops.dropout_bwd(y, mask, 0.5)
    assert device.host(dx).shape == x.shape and dx.dtype == dtype


@pytest.mark.parametrize("dtype", [F32, F64])
def test_bit_identical_at_1_and_2_threads(threads, dtype, rng):
    x = rng.standard_normal(1_000_003).astype(dtype)  # odd: the last Philox block is partial
    dy = rng.standard_normal(x.shape).astype(dtype)
    results = []
    for n in (1, 2, 1):
        threads(n)
        y, mask = ops.dropout_fwd(x, 0.37, seed=2**63 + 5, offset=2**40)
        results.append((y.tobytes(), mask.tobytes(), ops.dropout_bwd(dy, mask, 0.37).tobytes()))
    assert results[0] == results[1] == results[2]
    np.testing.assert_array_equal(np.frombuffer(results[0][1], np.uint8),
                                  R.dropout_mask(x.shape, 0.37, 2**63 + 5, 2**40))


# ---------------------------------------------------------------- PyTorch as the outside oracle

@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_values_match_torch_scaling(p, dtype, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(100_000).astype(dtype) * 10
    x[::101] = np.nan
    x[::103] = np.inf
    torch.manual_seed(0)
    ty, tmask = torch.native_dropout(torch.from_numpy(x), p, True)
    ty, tmask = ty.numpy(), tmask.numpy()
    y, mask = ops.dropout_fwd(x, p, seed=3)
    kept, dropped = tmask & mask.astype(bool), ~tmask & ~mask.astype(bool)
    assert kept.sum() > 100 and dropped.sum() > 100
    assert _bits(y[kept]) == _bits(ty[kept])  # the same kept value, bit for bit
    assert _bits(y[dropped]) == _bits(ty[dropped])  # +-0, and NaN for a dropped NaN or Inf
    # torch's kept fraction and ours agree with 1 - p (the two masks come from different generators)
    for m in (tmask, mask):
        assert abs(m.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / x.size)


@pytest.mark.parametrize("p", [0.123, 0.3, 0.77])
def test_kept_values_match_torch_nn_dropout_scaling(p, rng):
    # torch.nn.Dropout / F.dropout on the CPU scales by float32(1) / float32(1 - p), which is cnnkit's
    # formula; torch.native_dropout (an internal op) instead rounds the double 1/(1-p) and differs by
    # 1 ulp at p = 0.123. Users call F.dropout, so that is the one cnnkit matches bit for bit.
    torch = pytest.importorskip("torch")
    x = (rng.random(100_000) + 0.5).astype(F32)  # no zeros, so a kept unit is exactly y != 0
    ty = torch.nn.functional.dropout(torch.from_numpy(x), p, training=True).numpy()
    y, mask = ops.dropout_fwd(x, p, seed=3)
    both = (ty != 0) & mask.astype(bool)
    assert both.sum() > 2_000  # about (1 - p)^2 of the elements
    np.testing.assert_array_equal(y[both], ty[both])
    if p == 0.123:  # the awkward p: the internal op's rounding really differs here
        assert R.dropout_scale(p, F32) != F32(1 / (1 - p))


# ---------------------------------------------------------------- on each device (tests/ops/conftest.py)

@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 1027, 40000])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask_and_output_on_each_device_match_the_cpu_bit_for_bit(device, dtype, n, p):
    # the CPU against the reference, the stand-in and a GPU against the CPU
    want_fwd, want_bwd = (R.dropout_fwd, R.dropout_bwd) if device.name == "cpu" else (ops.dropout_fwd, ops.dropout_bwd)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(n).astype(dtype)
    x[::97] = np.nan
    for seed, offset in [(0, 0), (123456789, 7), (2**64 - 1, 2**40 + 3)]:
        y, mask = want_fwd(x, p, seed, offset)
        yd, maskd = ops.dropout_fwd(device.asarray(x), p, seed, offset)
        np.testing.assert_array_equal(device.host(maskd), mask)
        np.testing.assert_array_equal(device.host(yd), y)
        dy = rng.standard_normal(n).astype(dtype)
        np.testing.assert_array_equal(device.host(ops.dropout_bwd(device.asarray(dy), maskd, p)),
                                      want_bwd(dy, mask, p))
