# ck.Module: attribute registration under torch's names, the recorded forward (reuse of a value, Python
# branches, shared layers, modules inside modules), model.backward, what a failed forward leaves, the record
# released after backward, and the TypeError for an operation cnnkit cannot differentiate. Gradients are
# checked against float64 central differences (ck.gradcheck) and, where torch is installed, against torch.
import gc
import tracemalloc

import numpy as np
import pytest

import cnnkit as ck
import cnnkit.functional as F


class Block(ck.Module):
    def __init__(self, c, dtype=np.float64):
        super().__init__()
        self.conv1 = ck.Conv2d(c, c, 3, padding=1, dtype=dtype)
        self.bn1 = ck.BatchNorm2d(c, dtype=dtype)
        self.conv2 = ck.Conv2d(c, c, 3, padding=1, dtype=dtype)
        self.bn2 = ck.BatchNorm2d(c, dtype=dtype)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + x)


class Net(ck.Module):
    def __init__(self, dtype=np.float64):
        super().__init__()
        self.stem = ck.Conv2d(3, 4, 3, padding=1, dtype=dtype)
        self.block = Block(4, dtype)
        self.fc = ck.Linear(4, 5, dtype=dtype)

    def forward(self, x):
        x = self.block(F.relu(self.stem(x)))
        return self.fc(F.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _x(rng, shape=(3, 3, 6, 6)):
    return rng.standard_normal(shape)


def test_attributes_register_under_torch_names():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["stem.weight", "stem.bias", "block.conv1.weight", "block.conv1.bias", "block.bn1.weight",
                     "block.bn1.bias", "block.conv2.weight", "block.conv2.bias", "block.bn2.weight", "block.bn2.bias",
                     "fc.weight", "fc.bias"]
    assert len(net.parameters()) == 12
    sd = net.state_dict()
    assert "block.bn2.running_var" in sd and "block.bn1.num_batches_tracked" in sd
    assert [n for n, _ in net.named_children()] == ["stem", "block", "fc"]
    assert isinstance(net.block.conv1, ck.Conv2d)


def test_parameters_modulelist_moduledict_and_refusals():
    class M(ck.Module):
        def __init__(self):
            super().__init__()
            self.scale = ck.Parameter(np.full((1, 3), 2.0))
            self.layers = ck.ModuleList([ck.Linear(3, 3, dtype=np.float64) for _ in range(2)])
            self.heads = ck.ModuleDict({"a": ck.Linear(3, 2, dtype=np.float64)})

        def forward(self, x):
            for layer in self.layers:
                x = F.relu(layer(x))
            return self.heads["a"](x * self.scale)

    m = M()
    assert [n for n, _ in m.named_parameters()] == ["scale", "layers.0.weight", "layers.0.bias", "layers.1.weight",
                                                    "layers.1.bias", "heads.a.weight", "heads.a.bias"]
    rng = np.random.default_rng(0)
    assert ck.gradcheck(m, rng.standard_normal((4, 3))).ok

    class Plain(ck.Module):
        def __init__(self):
            super().__init__()
            self.layers = [ck.Linear(3, 3)]

    with pytest.raises(TypeError, match=r"plain list of layers.*ck\.ModuleList"):
        Plain()

    class Early(ck.Module):
        def __init__(self):
            self.fc = ck.Linear(3, 3)

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()
    with pytest.raises(TypeError, match="child module 'fc'"):
        Net().fc = 3


def test_forward_and_gradients_match_numeric_differences(rng):
    rep = ck.gradcheck(Net(), _x(rng), max_coords=8)
    assert rep.ok and len(rep.rows) == 13   # the input and every parameter


def test_value_used_twice_sums_its_gradients(rng):
    class Twice(ck.Module):
        def __init__(self):
            super().__init__()
            self.fc = ck.Linear(3, 3, dtype=np.float64)

        def forward(self, x):
            h = self.fc(x)
            return h * h + h * 3.0 + F.tanh(h)

    m = Twice()
    x = rng.standard_normal((5, 3))
    assert ck.gradcheck(m, x).ok
    # exact: d/dh (h^2 + 3h + tanh h) = 2h + 3 + 1 - tanh(h)^2, routed through the Linear
    m.zero_grad()
    out = m(x)
    g = rng.standard_normal(out.shape)
    dx = m.backward(g, need_dx=True)
    h = x @ m.fc.weight.data.T + m.fc.bias.data
    dh = g * (2 * h + 3 + 1 - np.tanh(h) ** 2)
    np.testing.assert_allclose(dx, dh @ m.fc.weight.data, rtol=1e-12)
    np.testing.assert_allclose(m.fc.weight.grad, dh.T @ x, rtol=1e-12)


def test_python_branch_is_recorded_per_call(rng):
    class Branch(ck.Module):
        def __init__(self):
            super().__init__()
            self.a = ck.Linear(3, 2, dtype=np.float64)
            self.b = ck.Linear(3, 2, dtype=np.float64)
            self.use_a = True

        def forward(self, x):
            return self.a(x) if self.use_a else F.sigmoid(self.b(x))

    m = Branch()
    x = rng.standard_normal((4, 3))
    for use_a in (True, False):
        m.use_a = use_a
        m.zero_grad()
        out = m(x)
        m.backward(np.ones(out.shape))
        taken, other = (m.a, m.b) if use_a else (m.b, m.a)
        assert np.abs(taken.weight.grad).sum() > 0 and not other.weight.grad.any()
        assert ck.gradcheck(m, x).ok


def test_layer_called_twice_accumulates_shared_weights(rng):
    class Shared(ck.Module):
        def __init__(self):
            super().__init__()
            self.fc = ck.Linear(3, 3, dtype=np.float64)

        def forward(self, x):
            return self.fc(F.tanh(self.fc(x)))

    m = Shared()
    x = rng.standard_normal((4, 3))
    assert ck.gradcheck(m, x).ok
    W, b = m.fc.weight.data, m.fc.bias.data
    m.zero_grad()
    out = m(x)
    g = rng.standard_normal(out.shape)
    m.backward(g)
    h = np.tanh(x @ W.T + b)
    dh = (g @ W) * (1 - h ** 2)
    np.testing.assert_allclose(m.fc.weight.grad, g.T @ h + dh.T @ x, rtol=1e-12)
    np.testing.assert_allclose(m.fc.bias.grad, g.sum(0) + dh.sum(0), rtol=1e-12)


def test_loss_backward_on_a_scalar_and_leaf_grads(rng):
    net = Net()
    x = ck.Tensor(_x(rng), requires_grad=True)
    out = net(x)
    loss = F.mean(out * out)
    assert isinstance(loss.item(), float)
    loss.backward()
    assert x.grad.shape == x.shape and np.abs(x.grad).sum() > 0
    assert np.abs(net.stem.weight.grad).sum() > 0
    with pytest.raises(RuntimeError, match="already released"):
        loss.backward()
    with pytest.raises(ValueError, match="non-scalar"):
        net(x).backward()


def test_model_backward_returns_dx_and_checks_dout(rng):
    net = Net()
    x = _x(rng)
    out = net(x)
    assert isinstance(out, ck.Tensor) and out.shape == (3, 5) and out.dtype == np.float64
    with pytest.raises(ValueError, match=r"dout must have the output's shape \(3, 5\)"):
        net.backward(np.ones((3, 4)))
    with pytest.raises(TypeError, match="dtype"):
        net.backward(np.ones((3, 5), dtype=np.float32))
    dx = net.backward(np.ones((3, 5)), need_dx=True)
    assert dx.shape == x.shape
    with pytest.raises(RuntimeError, match="before forward"):
        net.backward(np.ones((3, 5)))


def test_numpy_on_a_recorded_value_is_a_clear_type_error(rng):
    class Bad(ck.Module):
        def __init__(self):
            super().__init__()
            self.fc = ck.Linear(3, 3, dtype=np.float64)

        def forward(self, x):
            return np.exp(self.fc(x))

    with pytest.raises(TypeError, match=r"numpy\.exp on a ck\.Tensor: cnnkit cannot differentiate it"):
        Bad()(rng.standard_normal((2, 3)))
    t = F.relu(rng.standard_normal((2, 3)))
    with pytest.raises(TypeError, match=r"numpy\.sum"):
        np.sum(t)
    with pytest.raises(TypeError, match="tensor.data"):
        np.asarray(t)
    # arithmetic with an array on the left is recorded like tensor + array
    s = np.ones((2, 3)) + t
    assert isinstance(s, ck.Tensor)
    np.testing.assert_array_equal(s.data, t.data + 1)


def test_failed_forward_leaves_nothing_recorded(rng):
    class Fails(ck.Module):
        def __init__(self):
            super().__init__()
            self.bn = ck.BatchNorm2d(3, dtype=np.float64)
            self.drop = ck.Dropout(0.5)
            self.fc = ck.Linear(7, 2, dtype=np.float64)

        def forward(self, x):
            return self.fc(F.flatten(self.drop(self.bn(x)), 1))   # 3*4*4 features: the Linear refuses them

    m = Fails()
    x = _x(rng, (2, 3, 4, 4))
    before = {k: v.copy() for k, v in m.state_dict().items()}
    offset = m.drop.offset
    with pytest.raises(ValueError, match="Linear"):
        m(x)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])      # running statistics put back
    assert m.drop.offset == offset
    assert all(layer._cache is None for _, layer in m.named_layers())
    with pytest.raises(RuntimeError, match="before forward"):
        m.backward(np.ones((2, 2)))


def test_record_is_released_after_backward_no_growth_over_1000_steps(rng):
    class Small(ck.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = ck.Linear(8, 16, dtype=np.float64)
            self.fc2 = ck.Linear(16, 4, dtype=np.float64)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            return self.fc2(h + h)

    m = Small()
    opt = ck.optim.SGD(m.parameters(), lr=1e-3)
    x = rng.standard_normal((16, 8))

    def step():
        opt.zero_grad()
        loss = F.mean(m(x) * m(x))
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            step()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over 1000 steps"
    # and without gc: the record holds no reference cycle, so it is freed when the output goes
    gc.disable()
    try:
        import weakref
        out = m(x)
        ref = weakref.ref(out)
        node = out._node
        del out
        m.__dict__["_last"] = None
        assert ref() is None and node.saved is not None
    finally:
        gc.enable()


def test_module_inside_sequential_and_sequential_inside_module(rng):
    seq = ck.Sequential(Block(3), ck.ReLU(), Block(3))
    x = _x(rng, (2, 3, 5, 5))
    assert seq(x).shape == (2, 3, 5, 5)
    assert ck.gradcheck(seq, x, max_coords=6).ok

    class Outer(ck.Module):
        def __init__(self):
            super().__init__()
            self.body = ck.Sequential(ck.Conv2d(3, 3, 3, padding=1, dtype=np.float64), Block(3))
            self.head = ck.Linear(3, 2, dtype=np.float64)

        def forward(self, x):
            return self.head(F.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1))

    o = Outer()
    assert "body.1.conv2.weight" in dict(o.named_parameters())
    assert ck.gradcheck(o, x, max_coords=6).ok


def test_forward_hook_sees_and_may_replace_the_output(rng):
    net = Net()
    seen = []
    h = net.block.register_forward_hook(lambda mod, ins, out: seen.append(out.shape))
    h2 = net.fc.register_forward_hook(lambda mod, ins, out: out * 2.0)
    x = _x(rng)
    y2 = net(x).data
    h2.remove()
    y1 = net(x).data
    np.testing.assert_allclose(y2, 2 * y1)
    assert seen == [(3, 4, 6, 6)] * 2
    h.remove()
    net(x)
    assert len(seen) == 2


def test_torch_same_class_matches_and_its_state_dict_loads():
    torch = pytest.importorskip("torch")
    tnn, tF = torch.nn, torch.nn.functional

    class TBlock(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = tnn.Conv2d(c, c, 3, padding=1)
            self.bn1 = tnn.BatchNorm2d(c)
            self.conv2 = tnn.Conv2d(c, c, 3, padding=1)
            self.bn2 = tnn.BatchNorm2d(c)

        def forward(self, x):
            y = tF.relu(self.bn1(self.conv1(x)))
            return tF.relu(self.bn2(self.conv2(y)) + x)

    class TNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Conv2d(3, 4, 3, padding=1)
            self.block = TBlock(4)
            self.fc = tnn.Linear(4, 5)

        def forward(self, x):
            x = self.block(tF.relu(self.stem(x)))
            return self.fc(torch.flatten(tF.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    tnet = TNet().double()
    net = Net()
    assert list(net.state_dict()) == list(tnet.state_dict())
    net.load_state_dict(tnet.state_dict())
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6))
    g = np.random.default_rng(2).standard_normal((3, 5))
    xt = torch.tensor(x, requires_grad=True)
    yt = tnet(xt)
    yt.backward(torch.tensor(g))
    y = net(x)
    dx = net.backward(g, need_dx=True)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-12)
    tgrads = dict(tnet.named_parameters())
    for n, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, tgrads[n].grad.numpy(), rtol=0, atol=1e-10, err_msg=n)
    for k, v in tnet.state_dict().items():
        np.testing.assert_allclose(net.state_dict()[k], v.numpy(), rtol=0, atol=1e-12, err_msg=k)


def test_no_tensor_or_node_outlives_its_step_over_1000_conv_bn_steps(rng):
    # the layers' caches move into the record and leave with it: count the live ck.Tensor objects
    class ConvNet(ck.Module):
        def __init__(self):
            super().__init__()
            self.conv = ck.Conv2d(1, 4, 3, padding=1, dtype=np.float64)
            self.bn = ck.BatchNorm2d(4, dtype=np.float64)
            self.fc = ck.Linear(4 * 4 * 4, 3, dtype=np.float64)

        def forward(self, x):
            y = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
            return self.fc(F.flatten(y, 1))

    m = ConvNet()
    opt = ck.optim.Adam(m.parameters(), lr=1e-3)
    criterion = ck.nn.CrossEntropyLoss()
    x, y = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 3, 4)

    def live_tensors():
        gc.collect()
        return sum(issubclass(type(o), ck.Tensor) for o in gc.get_objects())   # type(): no proxy's __class__

    def step():
        opt.zero_grad()
        loss = criterion(m(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    first = step()
    base = live_tensors()
    for _ in range(1000):
        last = step()
    assert last < first                       # it trained
    assert live_tensors() == base
    assert all(layer._cache is None for _, layer in m.named_layers())


def test_recording_keeps_only_what_backward_needs_not_every_intermediate_value(rng):
    # BatchNorm's output feeds only ReLU, whose backward needs its own output: once the forward is done,
    # nothing may hold BatchNorm's output array (a Sequential frees it too; keeping it raised the Module's
    # peak memory by one activation per such pair)
    import weakref

    net = Net()
    kept = []
    net.block.bn1.register_forward_hook(lambda layer, ins, out: kept.append(weakref.ref(out.data)))
    out = net(_x(rng))
    gc.collect()
    assert len(kept) == 1 and kept[0]() is None
    # and the gradients are still those of the full record
    out.backward(np.ones(out.shape))
    assert np.abs(net.block.conv1.weight.grad).sum() > 0
