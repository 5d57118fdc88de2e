"""The TF32 path of the CUDA conv2d: the cnnkit.cuda.set_tf32 switch, and the three conv passes with
TF32 on and off against the CPU.

Tolerances are per element. With S = sum_i |a_i * b_i| over the n terms of an output and u = 2**-24:
- TF32 off: both sides add float32 products in float32, each within (n + 2) u S of the exact sum.
- TF32 on: rounding both operands to TF32 (11 significant bits, unit roundoff 2**-11) moves each product by
  at most (2**-10 + 2**-22) |a b|; the tensor core's float32 accumulation is allowed twice the usual error,
  2 (n + 2) u S (its adders may truncate: Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of NVIDIA
  tensor cores", PeerJ CS 2021). Against a float64 conv of the TF32-rounded operands only that
  accumulation error is left, about 2**10 / n times tighter.
The device tests skip without a GPU, a CUDA build or CuPy; written without a GPU, they have NOT run yet.
The switch tests run everywhere.
"""
import subprocess
import sys

import numpy as np
import pytest

import cnnkit
from cnnkit import _C, cuda, ops

needs_cuda = pytest.mark.skipif(not cuda.is_available(), reason=f"CUDA unavailable: {cuda.status()}")
U = 2.0 ** -24


@pytest.fixture(autouse=True)
def tf32_restored():
    before = cuda.get_tf32()
    yield
    cuda.set_tf32(before)


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


# ---------------------------------------------------------------- the switch (runs everywhere)

def test_tf32_is_off_in_a_fresh_process():
    code = "import cnnkit; assert cnnkit.cuda.get_tf32() is False"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_set_tf32_round_trips_bools():
    cuda.set_tf32(True)
    assert cuda.get_tf32() is True
    cuda.set_tf32(np.False_)
    assert cuda.get_tf32() is False
    cuda.set_tf32(np.True_)
    assert cuda.get_tf32() is True


@pytest.mark.parametrize("bad", [1, 0, 1.0, "yes", None, np.int64(1)])
def test_set_tf32_rejects_non_bools_and_keeps_the_setting(bad):
    cuda.set_tf32(True)
    with pytest.raises(TypeError, match=rf"set_tf32: enabled must be a bool, got {type(bad).__name__}"):
        cuda.set_tf32(bad)
    assert cuda.get_tf32() is True


def test_tf32_does_not_touch_the_cpu_conv():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)

    def run():
        return (ops.conv2d_fwd(x, w, padding=1), ops.conv2d_bwd_data(dy, w, x.shape, padding=1),
                ops.conv2d_bwd_weight(dy, x, w.shape, padding=1))
    off = run()
    cuda.set_tf32(True)
    for a, b in zip(run(), off):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not cnnkit.build_info()["cuda"], reason="cnnkit built without CUDA: no *_cuda bindings")
@pytest.mark.parametrize("name", ["conv2d_fwd_cuda", "conv2d_bwd_data_cuda", "conv2d_bwd_weight_cuda"])
def test_conv_bindings_take_a_tf32_flag_that_defaults_to_off(name):
    assert "tf32: bool = False" in getattr(_C, name).__doc__


# ---------------------------------------------------------------- device tests (need a GPU)

CASES = [  # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1),          # reduction 27: a partial BK step
    ((2, 4, 9, 7), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((1, 6, 5, 5), (6, 1, 3, 3), 1, 1, 1, 6),          # depthwise
    ((3, 16, 12, 12), (70, 16, 1, 1), 1, 0, 1, 1),     # K = 70: a second, nearly empty row tile
    ((2, 8, 15, 13), (8, 4, 5, 5), 3, 2, 2, 2),
    ((4, 32, 16, 16), (64, 32, 3, 3), 1, 1, 1, 1),     # several tiles in every GEMM dimension
    ((8, 16, 32, 32), (16, 16, 3, 3), 1, 1, 1, 1),     # one output tile: the weight pass splits K 16 ways
]


def tf32_round(a):
    """Round to TF32 as cvt.rna.tf32.f32: 11 significant bits, ties away from zero (normal floats)."""
    m, e = np.frexp(np.asarray(a, np.float64))
    t = np.ldexp(m, 11)
    return np.ldexp(np.sign(t) * np.floor(np.abs(t) + 0.5), e - 11)


def three_passes(x, w, b, dy, case):
    """(y, dx, dw) by cnnkit.ops on whatever arrays it gets; dw written (=)."""
    xs, ws, s, p, d, g = case
    return (ops.conv2d_fwd(x, w, b, s, p, d, g), ops.conv2d_bwd_data(dy, w, xs, s, p, d, g),
            ops.conv2d_bwd_weight(dy, x, ws, s, p, d, g))


def inputs(case, seed):
    xs, ws, s, p, d, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    y = ops.conv2d_fwd(x, w, b, s, p, d, g)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    return x, w, b, dy


def term_counts(case, dy_shape):
    """n per pass: fwd C/g*R*S (+1 for the bias), bwd_data K/g*R*S, bwd_weight N*P*Q (+1: split-K sum)."""
    xs, ws, s, p, d, g = case
    return (ws[1] * ws[2] * ws[3] + 1, ws[0] // g * ws[2] * ws[3], dy_shape[0] * dy_shape[2] * dy_shape[3] + 1)


def check_within(got, want, S, coef, what):
    err = np.abs(got.astype(np.float64) - want)
    bound = coef * S
    worst = float(np.max(err / np.maximum(bound, 1e-30)))
    assert worst <= 1.0, f"{what}: error reaches {worst:.2f} x the bound"


@needs_cuda
@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_conv2d_passes_against_cpu_within_the_bound(cp, case, tf32):
    x, w, b, dy = inputs(case, 10)
    cpu = three_passes(x, w, b, dy, case)
    f64 = lambda *a: [np.asarray(v, np.float64) for v in a]  # noqa: E731
    S = three_passes(*f64(np.abs(x), np.abs(w), np.abs(b), np.abs(dy)), case)
    cuda.set_tf32(tf32)
    gpu = [a.get() for a in three_passes(*[cp.asarray(a) for a in (x, w, b, dy)], case)]
    ns = term_counts(case, dy.shape)
    for name, got, want, s_, n in zip(("fwd", "bwd_data", "bwd_weight"), gpu, cpu, S, ns):
        coef = (2.0 ** -10 + 2.0 ** -22 + 3 * (n + 2) * U) if tf32 else 2 * (n + 2) * U
        check_within(got, want, s_, coef, f"{name} vs CPU float32 (tf32={tf32})")
    if tf32:  # against float64 of the TF32-rounded operands, the bias unrounded (it is added in float32)
        xr, wr, dyr = tf32_round(x), tf32_round(w), tf32_round(dy)
        ref = three_passes(xr, wr, b.astype(np.float64), dyr, case)
        Sr = three_passes(np.abs(xr), np.abs(wr), np.abs(b.astype(np.float64)), np.abs(dyr), case)
        for name, got, want, s_, n in zip(("fwd", "bwd_data", "bwd_weight"), gpu, ref, Sr, ns):
            check_within(got, want, s_, 2 * (n + 2) * U, f"{name} vs float64 of TF32 operands")


@needs_cuda
def test_tf32_by_hand_drops_the_bits_float32_keeps(cp):
    # x = 1 + 2**-12 is 1 in TF32 (a quarter of its ulp), so with w = 1 every sum counts its terms exactly.
    case = ((2, 3, 6, 5), (2, 3, 3, 3), 1, 1, 1, 1)
    x = np.full(case[0], 1 + 2.0 ** -12, np.float32)
    w = np.ones(case[1], np.float32)
    dy = np.full((2, 2, 6, 5), 1 + 2.0 ** -12, np.float32)
    ones_x, ones_dy = np.ones_like(x), np.ones_like(dy)
    want = three_passes(ones_x, w, None, ones_dy, case)  # small integers: exact on the CPU
    xd, wd, dyd = cp.asarray(x), cp.asarray(w), cp.asarray(dy)
    cuda.set_tf32(True)
    for got, exact in zip(three_passes(xd, wd, None, dyd, case), want):
        np.testing.assert_array_equal(got.get(), exact)
    cuda.set_tf32(False)
    y32 = ops.conv2d_fwd(xd, wd, padding=1).get()
    assert np.all(y32 > want[0]), "float32 must keep the 2**-12"
    np.testing.assert_allclose(y32, want[0] * (1 + 2.0 ** -12), rtol=30 * U)


@needs_cuda
def test_float64_ignores_tf32(cp):
    case = CASES[4]
    x, w, b, dy = inputs(case, 11)
    args = [cp.asarray(a.astype(np.float64)) for a in (x, w, b, dy)]
    off = [a.get() for a in three_passes(*args, case)]
    cuda.set_tf32(True)
    for got, want in zip(three_passes(*args, case), off):
        np.testing.assert_array_equal(got.get(), want)


@needs_cuda
def test_tf32_is_deterministic_split_k_included(cp):
    case = CASES[-1]
    x, w, b, dy = inputs(case, 12)
    args = [cp.asarray(a) for a in (x, w, b, dy)]
    cuda.set_tf32(True)
    first = [a.get() for a in three_passes(*args, case)]
    for got, want in zip(three_passes(*args, case), first):
        np.testing.assert_array_equal(got.get(), want)
    dw0 = cp.asarray(np.random.default_rng(13).standard_normal(case[1]).astype(np.float32))
    xs, ws, s, p, d, g = case
    acc = ops.conv2d_bwd_weight(args[3], args[0], ws, s, p, d, g, out=dw0.copy(), accumulate=True)
    np.testing.assert_array_equal(acc.get(), dw0.get() + first[2])  # partials summed, then one float add
