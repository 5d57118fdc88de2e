# cnnkit.functional: every op against torch.nn.functional in float64 (forward, and the gradient of every
# input through the recorded backward), gradchecked against central differences inside a ck.Module, and the
# argument errors.
import numpy as np
import pytest

import cnnkit as ck
import cnnkit.functional as F

# (name, ours(*inputs), torch's(*inputs) as a string evaluated with tF = torch.nn.functional, input shapes)
CASES = [
    ("relu", lambda x: F.relu(x), "tF.relu(x)", [(2, 3, 4, 5)]),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), "tF.leaky_relu(x, 0.1)", [(2, 3, 4, 5)]),
    ("sigmoid", lambda x: F.sigmoid(x * 8.0), "torch.sigmoid(x * 8.0)", [(3, 7)]),
    ("tanh", lambda x: F.tanh(x), "torch.tanh(x)", [(3, 7)]),
    ("gelu", lambda x: F.gelu(x * 3.0), "tF.gelu(x * 3.0)", [(3, 7)]),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), "tF.gelu(x, approximate='tanh')", [(3, 7)]),
    ("softmax", lambda x: F.softmax(x * 5.0, dim=1), "tF.softmax(x * 5.0, dim=1)", [(4, 6)]),
    ("softmax_dim0", lambda x: F.softmax(x, dim=0), "tF.softmax(x, dim=0)", [(4, 6, 2)]),
    ("log_softmax", lambda x: F.log_softmax(x * 5.0, dim=-1), "tF.log_softmax(x * 5.0, dim=-1)", [(4, 6)]),
    ("max_pool2d", lambda x: F.max_pool2d(x, 3, 2, 1), "tF.max_pool2d(x, 3, 2, 1)", [(2, 3, 7, 6)]),
    ("max_pool2d_ceil", lambda x: F.max_pool2d(x, 2, ceil_mode=True), "tF.max_pool2d(x, 2, ceil_mode=True)",
     [(2, 3, 5, 5)]),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
     "tF.avg_pool2d(x, 3, 2, 1, count_include_pad=False)", [(2, 3, 7, 6)]),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (3, 2)), "tF.adaptive_avg_pool2d(x, (3, 2))",
     [(2, 3, 7, 5)]),
    ("flatten", lambda x: F.flatten(x, 1), "torch.flatten(x, 1)", [(2, 3, 4, 5)]),
    ("flatten_mid", lambda x: F.flatten(x, 1, 2), "torch.flatten(x, 1, 2)", [(2, 3, 4, 5)]),
    ("cat", lambda a, b: F.cat([a, b], dim=1), "torch.cat([a, b], dim=1)", [(2, 3, 4), (2, 5, 4)]),
    ("cat_dim0", lambda a, b: F.cat((a, b)), "torch.cat((a, b))", [(2, 3), (4, 3)]),
    ("add", lambda a, b: F.add(a, b), "torch.add(a, b)", [(2, 3, 4), (3, 1)]),
    ("add_scalar", lambda x: x + 2.5, "x + 2.5", [(3, 4)]),
    ("sub", lambda a, b: a - b, "a - b", [(3, 4), (3, 4)]),
    ("mul", lambda a, b: F.mul(a, b), "torch.mul(a, b)", [(2, 3, 4), (2, 3, 4)]),
    ("mul_broadcast", lambda a, b: a * b, "a * b", [(2, 3, 4), (1, 3, 1)]),
    ("mul_scalar", lambda x: 3.0 * x, "3.0 * x", [(3, 4)]),
    ("linear", lambda x, w, b: F.linear(x, w, b), "tF.linear(x, w, b)", [(4, 5), (3, 5), (3,)]),
    ("linear_3d_nobias", lambda x, w: F.linear(x, w), "tF.linear(x, w)", [(2, 4, 5), (3, 5)]),
    ("conv2d", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), "tF.conv2d(x, w, b, stride=2, padding=1)",
     [(2, 4, 7, 6), (6, 4, 3, 3), (6,)]),
    ("conv2d_groups_dilation", lambda x, w: F.conv2d(x, w, padding="same", dilation=2, groups=2),
     "tF.conv2d(x, w, padding='same', dilation=2, groups=2)", [(2, 4, 7, 6), (6, 2, 3, 3)]),
    ("mean", lambda x: F.mean(x), "torch.mean(x)", [(3, 4)]),
    ("sum", lambda x: F.sum(x), "torch.sum(x)", [(3, 4)]),
]
IDS = [c[0] for c in CASES]


def _inputs(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


@pytest.mark.parametrize("name,ours,theirs,shapes", CASES, ids=IDS)
def test_equals_torch_in_float64_forward_and_backward(name, ours, theirs, shapes):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional   # noqa: F841 (used by eval)
    arrays = _inputs(shapes, 0)
    xs = [ck.Tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    env = dict(zip(ours.__code__.co_varnames, ts))    # the torch expression uses our lambda's argument names
    yt = eval(theirs, {"torch": torch, "tF": tF}, env)
    y = ours(*xs)
    assert isinstance(y, ck.Tensor) and y.dtype == np.float64
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g) if y.size > 1 else y.backward()
    (yt.backward(torch.tensor(g)) if y.size > 1 else yt.backward())
    for i, (x, t) in enumerate(zip(xs, ts)):
        np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"{name} input {i}")


@pytest.mark.parametrize("name,ours,theirs,shapes", CASES, ids=IDS)
def test_gradcheck_inside_a_module(name, ours, theirs, shapes):
    arrays = _inputs(shapes, 2)

    class Op(ck.Module):
        def __init__(self):
            super().__init__()
            for i, a in enumerate(arrays[1:]):
                setattr(self, f"p{i}", ck.Parameter(a.copy()))   # the other operands as parameters

        def forward(self, x):
            return ours(x, *[getattr(self, f"p{i}") for i in range(len(arrays) - 1)])

    assert ck.gradcheck(Op(), arrays[0], max_coords=12).ok


def test_dropout_uses_its_mask_and_is_the_identity_in_eval():
    x = ck.Tensor(np.random.default_rng(0).standard_normal((40, 50)), requires_grad=True)
    F.manual_seed(7)
    y = F.dropout(x, p=0.3)
    kept = y.data != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y.data[kept], x.data[kept] / 0.7, rtol=1e-15)
    y.backward(np.ones(y.shape))
    np.testing.assert_allclose(x.grad, kept / 0.7, rtol=1e-15)
    F.manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, p=0.3).data, y.data)   # the same stream repeats
    assert not np.array_equal(F.dropout(x, p=0.3).data, y.data)       # and advances
    e = F.dropout(x, p=0.3, training=False)
    assert e is x or np.array_equal(e.data, x.data)


def test_parameter_operand_feeds_its_grad():
    w = ck.Parameter(np.random.default_rng(0).standard_normal((3, 4)))
    x = np.random.default_rng(1).standard_normal((2, 4))
    F.sum(F.linear(x, w)).backward()
    np.testing.assert_allclose(w.grad, np.ones((2, 3)).T @ x, rtol=1e-14)
    F.sum(F.linear(x, w)).backward()
    np.testing.assert_allclose(w.grad, 2 * np.ones((2, 3)).T @ x, rtol=1e-14)   # accumulates, as torch


def test_argument_errors_name_the_op_and_argument():
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match=r"F\.softmax: dim is required"):
        F.softmax(x)
    with pytest.raises(ValueError, match=r"F\.softmax: dim must be in \[-2, 1\]"):
        F.softmax(x, dim=2)
    with pytest.raises(TypeError, match=r"F\.add: input and other must have one dtype"):
        F.add(x, np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"F\.mul: shapes \(2, 3\) and \(4,\) do not broadcast"):
        F.mul(x, np.zeros(4))
    with pytest.raises(TypeError, match=r"F\.relu: input must be float32 or float64|ReLU.*float32 or float64"):
        F.relu(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match=r"F\.tanh: input must be a ck\.Tensor, a Parameter or an array, got list"):
        F.tanh([1.0, 2.0])
    with pytest.raises(ValueError, match=r"F\.linear: input's last dimension must be in_features = 4"):
        F.linear(x, np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"F\.cat: every tensor must match"):
        F.cat([x, np.zeros((2, 4))], dim=0)
    with pytest.raises(ValueError, match=r"F\.gelu: approximate must be"):
        F.gelu(x, approximate="fast")
    with pytest.raises(TypeError, match=r"F\.max_pool2d: return_indices must be a bool, got str"):
        F.max_pool2d(np.zeros((1, 1, 4, 4)), 2, return_indices="yes")
