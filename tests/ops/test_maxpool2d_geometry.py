# maxpool2d geometry (ceil_mode, padding, dilation) against PyTorch, exhaustively (the rest of the op's
# tests: test_maxpool2d.py).
import itertools

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import ops

F32, F64 = np.float32, np.float64


# ---------------------------------------------------------------- geometry against PyTorch, exhaustively
# Max-pooling geometry against PyTorch (CPU) as the oracle: every geometry torch accepts, cnnkit accepts
# with the same output shape (torch's pooling_output_shape: floor division, and in ceil_mode the last
# window dropped when it would start in the right padding), the same values and argmax indices, and the
# same gradient as torch's autograd; every geometry torch refuses (padding over half the kernel, an output
# smaller than 1) cnnkit refuses with a ValueError. The one deliberate difference: where torch returns a
# window that lies wholly in the padding (-inf with an index past the plane or wrapped into the next row,
# so its gradient lands on a cell outside the window; possible only with dilation), cnnkit refuses the
# geometry. The grid walks each dimension's (size, kernel, stride, padding,
# dilation, ceil_mode) once with the other dimension plain, then random pairs, then hand-picked cases.

SIZES = (1, 2, 3, 5, 10, 16)
KERNELS = (1, 2, 3, 5)
STRIDES = (1, 2, 3, 4)
DILATIONS = (1, 2, 3)


def _dim_configs():
    for n, k, s, d in itertools.product(SIZES, KERNELS, STRIDES, DILATIONS):
        for p in range(k // 2 + 1):
            yield n, k, s, p, d


def _input(shape, dtype, seed):
    g = np.random.default_rng(seed)
    x = g.integers(0, 5, shape).astype(dtype)  # five levels: ties in most windows
    x[g.random(shape) < 0.02] = np.nan
    return x


def _check(shape, k, s, p, d, ceil_mode, dtype=np.float32, seed=0):
    """Compares cnnkit with torch on one geometry; returns a description of the first difference or None."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    what = f"x{shape} k={k} s={s} p={p} d={d} ceil={ceil_mode}"
    x = _input(shape, dtype, seed)
    hp = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    try:
        ty, tidx = F.max_pool2d(tx, **hp, return_indices=True)
    except RuntimeError as e:
        torch_error = str(e)
    else:
        torch_error = None
    try:
        y, idx = ops.maxpool2d_fwd(x, **hp)
    except ValueError as e:
        ck_error = str(e)
    else:
        ck_error = None
    if torch_error is not None:
        return None if ck_error is not None else f"{what}: torch refuses ({torch_error}), cnnkit accepts"
    # The input holds no -inf, so a -inf output is a window wholly in the padding (its torch index is
    # past the plane, or wraps into the next row of it).
    if bool(torch.isneginf(ty).any()):
        if ck_error is None or "lies wholly in the padding" not in ck_error:
            return f"{what}: torch has a window wholly in the padding, cnnkit says {ck_error!r}"
        return None
    if ck_error is not None:
        return f"{what}: torch accepts (output {tuple(ty.shape)}), cnnkit refuses: {ck_error}"
    if y.shape != tuple(ty.shape):
        return f"{what}: shape {y.shape} != torch {tuple(ty.shape)}"
    if y.tobytes() != ty.detach().numpy().tobytes() or not np.array_equal(idx, tidx.numpy()):
        return f"{what}: values or indices differ from torch"
    # Multiples of 1/4 in [-2, 2]: every sum of a few of them is exact, so the order of the adds cannot matter.
    dy = np.random.default_rng(seed + 1).integers(-8, 9, y.shape).astype(dtype) / 4
    ty.backward(torch.from_numpy(dy))
    dx = ops.maxpool2d_bwd(dy, idx, x.shape)
    if not np.array_equal(dx, tx.grad.numpy()):
        return f"{what}: gradient differs from torch's autograd"
    return None


def _failures(cases):
    bad = [f for f in (_check(*c) for c in cases) if f is not None]
    return bad[:10], len(bad)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("axis", ["height", "width"])
def test_every_single_dimension_geometry_matches_torch(axis, ceil_mode):
    cases = []
    for n, k, s, p, d in _dim_configs():
        if axis == "height":
            cases.append(((1, 2, n, 4), (k, 1), (s, 1), (p, 0), (d, 1), ceil_mode))
        else:
            cases.append(((1, 2, 4, n), (1, k), (1, s), (0, p), (1, d), ceil_mode))
    shown, count = _failures(cases)
    assert count == 0, f"{count} of {len(cases)} geometries differ from torch, e.g.:\n" + "\n".join(shown)


def test_random_two_dimensional_geometries_match_torch():
    g = np.random.default_rng(28)
    configs = list(_dim_configs())
    cases = []
    for i in range(400):
        (h, kh, sh, ph, dh), (w, kw, sw, pw, dw) = (configs[j] for j in g.integers(0, len(configs), 2))
        cases.append(((2, 3, h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw), bool(i % 2),
                      np.float64 if i % 3 == 0 else np.float32, i))
    shown, count = _failures(cases)
    assert count == 0, f"{count} of {len(cases)} geometries differ from torch, e.g.:\n" + "\n".join(shown)


# Windows larger than the padded input, which torch accepts in ceil_mode (the first is the case that was
# refused), and geometries whose last window starts exactly at the edge of the right padding.
HAND = [
    ((1, 4, 16, 10), 5, (2, 4), (2, 1), (2, 3), True),
    ((1, 1, 5, 5), 3, 3, 0, 3, True),     # the window spans 7 > 5, but 5 - 7 + (3 - 1) >= 0: one window
    ((1, 1, 5, 5), 3, 2, 0, 3, True),     # 5 - 7 + (2 - 1) < 0: torch refuses
    ((1, 1, 5, 5), 5, 4, 0, 2, True),     # 5 - 9 + 3 < 0: torch refuses
    ((2, 3, 7, 9), (3, 4), (4, 5), (1, 2), (3, 2), True),
    ((1, 2, 6, 6), 2, 2, 1, 1, True),     # (out - 1) * stride == in + pad: the last window is dropped
    ((1, 2, 7, 7), 3, 3, 1, 1, True),
    ((1, 1, 1, 1), 1, 4, 0, 1, True),
]


@pytest.mark.parametrize("case", HAND, ids=[f"hand{i}" for i in range(len(HAND))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hand_geometries_match_torch(case, dtype):
    assert _check(*case, dtype=dtype, seed=5) is None


def test_torch_accepted_ceil_geometry_through_the_layer():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _input((1, 4, 16, 10), np.float32, seed=9)
    layer = ck.MaxPool2d(5, stride=(2, 4), padding=(2, 1), dilation=(2, 3), ceil_mode=True)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = F.max_pool2d(tx, 5, stride=(2, 4), padding=(2, 1), dilation=(2, 3), ceil_mode=True)
    assert tuple(ty.shape) == (1, 4, 7, 1)
    assert layer.output_shape(x.shape) == (1, 4, 7, 1)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    dy = np.random.default_rng(3).integers(-8, 9, y.shape).astype(np.float32) / 4
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(layer.backward(dy), tx.grad.numpy())


@pytest.mark.parametrize("hp, message", [
    (dict(kernel_size=5, stride=3, dilation=2, ceil_mode=True), r"maxpool2d_fwd: output height would be 0"),
    (dict(kernel_size=(1, 6), dilation=(1, 1)), r"maxpool2d_fwd: output width would be 0"),
    (dict(kernel_size=3, padding=2), r"padding must be at most half the kernel size"),
])
def test_geometries_torch_refuses_are_value_errors(hp, message):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.zeros((1, 1, 5, 5), np.float32)
    with pytest.raises(RuntimeError):
        F.max_pool2d(torch.from_numpy(x), **hp)
    with pytest.raises(ValueError, match=message):
        ops.maxpool2d_fwd(x, **hp)
