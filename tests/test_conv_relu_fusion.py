# The fused Conv2d + ReLU epilogue: ops.conv2d_fwd(relu=True) equals relu_fwd(conv2d_fwd(...)) bit for bit
# (NaN and -0.0 included) on the gemm and Winograd paths, and a model runs a Conv2d whose only reader is the next layer, a ReLU, as one
# fused pass, with the same outputs and gradients as running the layers one by one; it leaves the conv
# alone when its output has another reader or is the model's output.
import numpy as np
import pytest

import cnnkit as ck
from cnnkit import ops


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape,k,hp", [((3, 4, 9, 8), 5, dict(padding=1)), ((2, 3, 16, 16), 16, dict(stride=2)),
                                        ((20, 3, 8, 8), 32, dict(padding=1)), ((2, 32, 6, 6), 8, dict())])
@pytest.mark.parametrize("algorithm", ["gemm", "winograd"])
def test_fused_relu_equals_relu_of_conv_bit_for_bit(rng, dtype, bias, shape, k, hp, algorithm):
    if algorithm == "winograd" and hp.get("stride", 1) != 1:
        pytest.skip("Winograd runs stride 1 only")
    hp = dict(hp, algorithm=algorithm)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    w = rng.standard_normal((k, shape[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    want = ops.relu_fwd(ops.conv2d_fwd(x, w, b, **hp))
    got = ops.conv2d_fwd(x, w, b, **hp, relu=True)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got).any()  # the NaN reached the output and was kept, as relu_fwd keeps it
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_relu_flag_is_checked():
    x, w = np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(TypeError, match="conv2d_fwd: relu must be a bool"):
        ops.conv2d_fwd(x, w, relu=1)


def _net(seed=0):
    return ck.Sequential(ck.Conv2d(3, 8, 3, padding=1, seed=seed), ck.ReLU(), ck.MaxPool2d(2),
                         ck.Conv2d(8, 4, 3, padding=1, seed=seed + 1), ck.ReLU(), ck.Flatten(),
                         ck.Linear(4 * 4 * 4, 3, seed=seed + 2))


def _by_hand(model, x, dout):
    """Forward and backward one layer at a time (no fusion), returning output and parameter grads."""
    layers = [model[i] for i in range(len(model))]
    v = x
    for layer in layers:
        v = layer.forward(v)
    d = dout
    for layer in reversed(layers):
        d = layer.backward(d)
    return v, {n: p.grad.copy() for n, p in model.named_parameters()}


def test_a_sequential_fuses_conv_relu_and_matches_the_layers_run_one_by_one(rng, monkeypatch):
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    dout = rng.standard_normal((4, 3)).astype(np.float32)
    ref_model = _net()
    ref_model.zero_grad()
    y_ref, g_ref = _by_hand(ref_model, x, dout)

    calls = []
    real_conv, real_relu = ops.conv2d_fwd, ops.relu_fwd
    monkeypatch.setattr(ops, "conv2d_fwd", lambda *a, **k: calls.append(("conv", k.get("relu"))) or
                        real_conv(*a, **k))
    monkeypatch.setattr(ops, "relu_fwd", lambda *a, **k: calls.append(("relu", None)) or real_relu(*a, **k))
    model = _net()
    model.zero_grad()
    y = model.forward(x)
    model.backward(dout)
    assert calls == [("conv", True), ("conv", True)]  # both convs fused; no separate relu pass
    assert np.array_equal(y, y_ref)
    for n, p in model.named_parameters():
        assert np.array_equal(p.grad, g_ref[n]), n


def test_a_conv_with_another_reader_or_at_the_output_is_not_fused(rng, monkeypatch):
    flags = []
    real_conv = ops.conv2d_fwd
    monkeypatch.setattr(ops, "conv2d_fwd", lambda *a, **k: flags.append(k.get("relu")) or real_conv(*a, **k))
    inp = ck.Input((4, 6, 6))
    c = ck.Conv2d(4, 4, 3, padding=1, seed=1)(inp)
    res = ck.Graph(inp, ck.Add()(ck.ReLU()(c), c))  # the conv's output also feeds the Add
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    y = res.forward(x)
    conv_out = real_conv(x, res.layers[list(res.layers)[0]].weight.data, res.layers[list(res.layers)[0]].bias.data,
                         padding=1)
    assert flags[0] is False
    np.testing.assert_array_equal(y, ops.relu_fwd(conv_out) + conv_out)
    flags.clear()
    ck.Sequential(ck.ReLU(), ck.Conv2d(4, 2, 1, seed=2)).forward(x)  # conv last: nothing to fuse with
    assert flags == [False]
