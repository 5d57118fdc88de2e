# Models as graphs: Sequential and the functional Graph API (a ResNet basic block with a 1x1 projection
# shortcut, checked against the same block in torch), fan-out accumulation, skipped gradients (no
# conv2d_bwd_data for the first layer, no weight gradient for frozen parameters), summary, parameters,
# train/eval, and the model-level bad-input block (mismatches name both layers and both shapes).
import numpy as np
import pytest

import cnnkit as ck

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def basic_block(x, cin, cout, stride=1):
    """ResNet basic block (He et al. 2016): two 3x3 convs with BN; a 1x1 projection when the shape changes."""
    h = ck.ReLU()(ck.BatchNorm2d(cout)(ck.Conv2d(cin, cout, 3, stride, 1, bias=False)(x)))
    h = ck.BatchNorm2d(cout)(ck.Conv2d(cout, cout, 3, 1, 1, bias=False)(h))
    sc = ck.BatchNorm2d(cout)(ck.Conv2d(cin, cout, 1, stride, bias=False)(x)) if stride != 1 or cin != cout else x
    return ck.ReLU()(ck.Add()(h, sc))


class TorchBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        nn = torch.nn
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.cs, self.bs = nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x):
        h = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(h + self.bs(self.cs(x)))


def _torch_names():
    # graph node names (creation order: conv2d0, batchnorm2d0, ...) -> the torch block's modules
    return {"conv2d0": "c1", "batchnorm2d0": "b1", "conv2d1": "c2", "batchnorm2d1": "b2", "conv2d2": "cs",
            "batchnorm2d2": "bs"}


def test_resnet_basic_block_with_projection_matches_torch():
    x = ck.Input((4, 8, 8))
    model = ck.Graph(x, basic_block(x, 4, 6, stride=2)).to(np.float64)
    assert model.output_shape((2, 4, 8, 8)) == (2, 6, 4, 4)
    tb = TorchBlock(4, 6, 2).double()
    names = _torch_names()
    with torch.no_grad():
        for n, p in model.named_parameters():
            layer, pn = n.split(".")
            p.data[...] = np.random.default_rng(len(n)).standard_normal(p.shape) * 0.5 + (1.0 if "batch" in n and pn == "weight" else 0)
            getattr(getattr(tb, names[layer]), pn).copy_(torch.from_numpy(p.data))
    xv = rnd(3, 4, 8, 8)
    y = model(xv)
    xt = torch.from_numpy(xv.copy()).requires_grad_(True)
    yt = tb(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    dy = rnd(*y.shape, seed=1)
    dx = model.backward(dy, need_dx=True)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    for n, p in model.named_parameters():
        layer, pn = n.split(".")
        ref = getattr(getattr(tb, names[layer]), pn).grad.numpy()
        assert np.abs(p.grad - ref).max() <= 1e-10 * np.abs(ref).max(), n
    for n, b in model.named_buffers():
        layer, bn = n.split(".")
        ref = getattr(getattr(tb, names[layer]), bn).numpy()
        np.testing.assert_allclose(b, ref, rtol=1e-10, atol=1e-12)


def test_resnet_block_gradcheck_and_identity_shortcut():
    x = ck.Input((3, 5, 5))
    h = basic_block(x, 3, 3)                     # identity shortcut: x fans out to the branch and the Add
    model = ck.Graph(x, basic_block(h, 3, 4, stride=2))
    report = ck.gradcheck(model, rnd(2, 3, 5, 5), max_coords=8)
    assert report.ok and len(report.rows) == 1 + len(model.parameters())


def test_fan_out_accumulates():
    # y = relu(a) * 1 + relu(a) through two different paths; dx must be the sum over both
    x = ck.Input((6,))
    a = ck.Linear(6, 4, seed=0, name="a")(x)
    b = ck.Linear(4, 4, seed=1, name="b")(a)
    y = ck.Concat()(ck.Add()(a, b), a)           # a is used three times
    model = ck.Graph(x, y).to(np.float64)
    xv, dy = rnd(3, 6), rnd(3, 8, seed=1)
    model(xv)
    dx = model.backward(dy, need_dx=True)
    Wa, ba, Wb = (torch.from_numpy(model["a"].weight.data.copy()).requires_grad_(True),
                  torch.from_numpy(model["a"].bias.data.copy()), torch.from_numpy(model["b"].weight.data.copy()))
    xt = torch.from_numpy(xv.copy()).requires_grad_(True)
    at = xt @ Wa.T + ba
    yt = torch.cat([at + at @ Wb.T + torch.from_numpy(model["b"].bias.data), at], 1)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model["a"].weight.grad, Wa.grad.numpy(), rtol=1e-12, atol=1e-12)


def _count(monkeypatch, name):
    calls = []
    real = getattr(ck.ops, name)

    def spy(*a, **k):
        if a[0].shape[2:] != (1, 1):   # Linear runs as a 1x1 conv over a 1x1 plane; count the real convs
            calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(ck.ops, name, spy)
    return calls


def test_backward_skips_gradients_nothing_needs(monkeypatch):
    model = ck.Sequential(ck.Conv2d(3, 4, 3, padding=1, seed=0), ck.ReLU(), ck.Conv2d(4, 5, 3, seed=1), ck.Flatten(),
                          ck.Linear(5 * 6 * 6, 2, seed=2))
    data, weight = _count(monkeypatch, "conv2d_bwd_data"), _count(monkeypatch, "conv2d_bwd_weight")
    x = rnd(2, 3, 8, 8).astype(np.float32)
    model(x)
    assert model.backward(np.ones((2, 2), np.float32)) is None
    assert len(data) == 1 and len(weight) == 2           # no data gradient for the first conv
    data.clear(), weight.clear()
    model(x)
    dx = model.backward(np.ones((2, 2), np.float32), need_dx=True)
    assert dx.shape == x.shape and len(data) == 2
    # freeze the first conv: no weight gradient for it, and its grad stays zero
    data.clear(), weight.clear()
    for p in model[0].parameters():
        p.requires_grad = False
    model.zero_grad()
    model(x)
    model.backward(np.ones((2, 2), np.float32))
    assert len(weight) == 1 and data == []              # conv2 no longer needs its input gradient either
    assert not model[0].weight.grad.any() and not model[0].bias.grad.any()
    # freeze everything up to the Linear: no conv gradients at all
    data.clear(), weight.clear()
    for p in model[2].parameters():
        p.requires_grad = False
    model(x)
    model.backward(np.ones((2, 2), np.float32))
    assert data == [] and weight == []
    assert model[4].weight.grad.any()


def test_frozen_parameter_grads_are_the_rest_unchanged():
    m1 = ck.Sequential(ck.Linear(5, 4, seed=0), ck.ReLU(), ck.Linear(4, 3, seed=1)).to(np.float64)
    m2 = m1.copy()
    m2[2].weight.requires_grad = False
    x, dy = rnd(6, 5), rnd(6, 3, seed=2)
    for m in (m1, m2):
        m(x)
        m.backward(dy)
    assert not m2[2].weight.grad.any()
    np.testing.assert_array_equal(m1[0].weight.grad, m2[0].weight.grad)
    np.testing.assert_array_equal(m1[2].bias.grad, m2[2].bias.grad)


def test_parameters_names_zero_grad_train_eval():
    model = ck.Sequential(ck.Conv2d(1, 2, 3, name="conv"), ck.BatchNorm2d(2), ck.ReLU(), ck.Flatten(),
                          ck.Dropout(0.5), ck.Linear(2 * 4 * 4, 3, bias=False))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["conv.weight", "conv.bias", "1.weight", "1.bias", "5.weight"]
    assert [p.shape for p in model.parameters()] == [(2, 1, 3, 3), (2,), (2,), (2,), (3, 32)]
    assert [n for n, _ in model.named_buffers()] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    x = rnd(4, 1, 6, 6).astype(np.float32)
    model(x)
    model.backward(np.ones((4, 3), np.float32))
    assert all(p.grad.any() for p in model.parameters())
    model.zero_grad()
    assert not any(p.grad.any() for p in model.parameters())
    model.eval()
    assert not any(layer.training for _, layer in model.named_layers())
    y1, y2 = model(x), model(x)
    np.testing.assert_array_equal(y1, y2)               # eval: no dropout, running statistics
    model.train()
    assert all(layer.training for _, layer in model.named_layers())
    assert not np.array_equal(model(x), model(x))        # train: a fresh dropout mask per call


def test_same_seed_reproduces_a_training_run():
    def run(seed):
        model = ck.Sequential(ck.Linear(8, 16, seed=0), ck.Dropout(0.5), ck.Linear(16, 2, seed=1), seed=seed)
        outs = []
        for step in range(3):
            outs.append(model(rnd(4, 8, seed=step).astype(np.float32)))
        return outs
    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_summary_table():
    model = ck.Sequential(ck.Conv2d(3, 8, 3, padding=1), ck.ReLU(), ck.MaxPool2d(2), ck.Flatten(), ck.Linear(8 * 4 * 4, 10))
    lines = []
    text = model.summary((3, 8, 8), print_fn=lines.append)
    assert lines == [text]
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines()}
    assert rows["0"][1:] == ["Conv2d", "(N,", "8,", "8,", "8)", "224", f"{2 * 8 * 64 * 27 + 8 * 64:,}"]
    assert rows["2"][1:6] == ["MaxPool2d", "(N,", "8,", "4,", "4)"]
    assert rows["4"][1:] == ["Linear", "(N,", "10)", "1,290", f"{2 * 128 * 10 + 10:,}"]
    assert rows["total"][1] == "1,514"
    x = ck.Input((3, 8, 8))
    g = ck.Graph(x, ck.ReLU()(ck.Conv2d(3, 4, 1)(x)))
    assert "conv2d0" in g.summary(print_fn=None) and "relu0" in g.summary(print_fn=None)
    with pytest.raises(ValueError, match="input_shape is required"):
        model.summary()


def test_nested_sequential_inside_graph():
    x = ck.Input((4,))
    inner = ck.Sequential(ck.Linear(4, 4, seed=0), ck.ReLU(), name="body")
    y = ck.Add()(inner(x), x)
    model = ck.Graph(x, ck.Linear(4, 2, seed=1)(y))
    assert [n for n, _ in model.named_parameters()] == ["body.0.weight", "body.0.bias", "linear0.weight", "linear0.bias"]
    assert ck.gradcheck(model, rnd(3, 4)).ok


# ---------------------------------------------------------------- bad inputs at the model level

def test_shape_mismatch_names_both_layers_and_shapes():
    model = ck.Sequential(ck.Conv2d(3, 8, 3), ck.ReLU(), ck.Flatten(), ck.Linear(100, 10))
    with pytest.raises(ValueError, match=r"layer '2' Flatten gives \(2, 288\).*layer '3' Linear\(in_features=100.*"
                                         r"expects 100 input features, got shape \(2, 288\)"):
        model(np.zeros((2, 3, 8, 8), np.float32))
    x = ck.Input((3, 8, 8))
    h = ck.Conv2d(3, 8, 3)(x)
    with pytest.raises(ValueError, match=r"Conv2d gives \(N, 8, 6, 6\), but Conv2d Conv2d\(in_channels=4.*expects 4 input"):
        ck.Conv2d(4, 8, 3)(h)
    with pytest.raises(ValueError, match=r"input 'input' gives \(N, 3, 8, 8\), but Linear"):
        ck.Linear(3, 2)(x)


def test_model_wrong_rank_and_backward_before_forward():
    model = ck.Sequential(ck.Conv2d(3, 4, 3), ck.ReLU())
    with pytest.raises(ValueError, match=r"the model input gives \(3, 8, 8\).*layer '0'.*must be 4-D"):
        model(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        model.backward(np.zeros((1, 4, 6, 6), np.float32))
    with pytest.raises(ValueError, match="expected 1 input"):
        model(np.zeros((1, 3, 8, 8), np.float32), np.zeros((1, 3, 8, 8), np.float32))
    relu = ck.ReLU()
    with pytest.raises(ValueError, match="used twice"):
        ck.Sequential(relu, relu)
    with pytest.raises(TypeError, match="argument 1 must be a Layer"):
        ck.Sequential(ck.ReLU(), np.zeros(3))


def test_flat_buffer_rebinding_keeps_a_model_working():
    # an optimizer may move every parameter into one FlatBuffer: grads must land in it, steps must be seen
    def make():
        x = ck.Input((2, 6, 6))
        h = ck.ReLU()(ck.BatchNorm2d(3)(ck.Conv2d(2, 3, 3, padding=1, seed=0)(x)))
        h = ck.LocallyConnected2d(3, 2, 3, (6, 6), stride=2, seed=1)(h)
        return ck.Graph(x, ck.DropConnect(8, 3, p=0.3, seed=2)(ck.Flatten()(h))).to(np.float64)
    a, b = make(), make()
    fb = ck.FlatBuffer(b.parameters())
    x, dy = rnd(4, 2, 6, 6), rnd(4, 3, seed=1)
    for m in (a, b):
        m(x)
        m.backward(dy)
    assert np.array_equal(fb.grad, np.concatenate([p.grad.ravel() for p in a.parameters()]))
    fb.data -= 0.1 * fb.grad                       # one fused SGD step on the flat buffer
    for p in a.parameters():
        p.data -= 0.1 * p.grad
    np.testing.assert_array_equal(a(x), b(x))


def test_sgd_on_a_small_net_learns():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0, :3].sum(axis=(1, 2)) > x[:, 0, 3:].sum(axis=(1, 2))).astype(np.int64)   # top half brighter?
    model = ck.Sequential(ck.Conv2d(1, 4, 3, padding=1, seed=0), ck.ReLU(), ck.MaxPool2d(2), ck.Flatten(),
                          ck.Linear(36, 2, seed=1))
    losses = []
    for _ in range(60):
        model.zero_grad()
        loss, d = ck.losses.softmax_cross_entropy(model(x), y)
        model.backward(d)
        for p in model.parameters():
            p.data -= 0.1 * p.grad
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    assert (model(x).argmax(axis=1) == y).mean() > 0.9


def _small_net():
    return ck.Sequential(ck.Conv2d(1, 4, 3, padding=1, seed=1), ck.BatchNorm2d(4), ck.ReLU(), ck.Dropout(0.5),
                         ck.Flatten(), ck.Linear(64, 10, seed=2))


def test_sequential_indexing_and_slicing_share_layers():
    m = _small_net()
    assert m[0] is m["0"] and m[-1] is m["5"] and len(m) == 6
    body = m[:-1]
    assert isinstance(body, ck.Sequential) and len(body) == 5 and body[0] is m[0]
    assert list(body.layers) == ["0", "1", "2", "3", "4"]
    assert body[3].seed == m[3].seed     # the slice does not re-seed the shared dropout stream
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    m.eval()
    np.testing.assert_array_equal(m[-1](body(x)), m(x))
    assert m[1:3](np.ones((2, 4, 4, 4), np.float32)).shape == (2, 4, 4, 4)
    with pytest.raises(IndexError, match=r"Sequential: layer index 6 out of range for 6 layers"):
        m[6]
    with pytest.raises(KeyError, match=r"no layer named 'nope'; the layers are \['0', '1'"):
        m["nope"]
    with pytest.raises(TypeError, match=r"Sequential: index with an int or a layer name, got float"):
        m[1.5]
    with pytest.raises(ValueError, match=r"Sequential: the slice \[3:3\] selects no layers"):
        m[3:3]
    with pytest.raises(ValueError, match=r"Sequential: a slice of layers must have step 1, got 2"):
        m[::2]


def test_state_dict_round_trip_and_torch_interchange():
    m = _small_net()
    m.train()
    m(np.random.default_rng(1).standard_normal((8, 1, 4, 4)).astype(np.float32))  # moves the running stats
    sd = m.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                        "1.num_batches_tracked", "5.weight", "5.bias"]
    sd["0.weight"][...] = 7                      # copies: the model is untouched
    assert m[0].weight.data.max() != 7
    other = ck.Sequential(ck.Conv2d(1, 4, 3, padding=1, seed=8), ck.BatchNorm2d(4), ck.ReLU(), ck.Dropout(0.5),
                          ck.Flatten(), ck.Linear(64, 10, seed=9))
    assert other.load_state_dict(m.state_dict()) == ([], [])
    for (n, a), (_, b) in zip(m.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=n)
    with pytest.raises(ck.zoo.StateDictError, match=r"1 shape mismatch\(es\): 0.weight expected \(4, 1, 3, 3\) got \(1,\)"):
        other.load_state_dict({**m.state_dict(), "0.weight": np.zeros((1,), np.float32)})
    torch = pytest.importorskip("torch")
    tm = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                             torch.nn.Dropout(0.5), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    tm.eval()
    m.eval()
    x = np.random.default_rng(2).standard_normal((3, 1, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(tm(torch.from_numpy(x)).detach().numpy(), m(x), rtol=1e-5, atol=1e-6)
    back = _small_net()
    back.load_state_dict(tm.state_dict())
    back.eval()
    np.testing.assert_array_equal(back(x), m(x))


def test_torch_named_conveniences():
    m = _small_net()
    assert [n for n, _ in m.named_modules()] == ["", "0", "1", "2", "3", "4", "5"]
    assert m.modules()[0] is m and m.modules()[1] is m[0]
    assert m.children() == [m[i] for i in range(6)] and ck.ReLU().children() == []
    assert m.double() is m and m[0].weight.dtype == np.float64 and m[1].running_mean.dtype == np.float64
    assert m.float() is m and m[5].weight.grad.dtype == np.float32
    assert m.cpu() is m and m.device == "cpu"
    assert m.requires_grad_(False) is m and not any(p.requires_grad for p in m.parameters())
    m.requires_grad_()
    assert all(p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda' or 'cuda:N' \(N a device index\), got 'cuda:x'"):
        m.cuda("x")


@pytest.mark.parametrize("shape, exc, message", [
    ((3, -1, 8), ValueError, r"Input: shape must be >= 1, got -1"),
    ((3, 8.0, 8), TypeError, r"Input: shape must be an int, got float"),
    (5, TypeError, r"Input: shape must be a tuple of ints without the batch dimension"),
])
def test_input_shape_is_checked(shape, exc, message):
    with pytest.raises(exc, match=message):
        ck.Input(shape)


def test_a_declared_input_shape_is_enforced_and_an_undeclared_one_is_free():
    x = ck.Input((3, 8, 8))
    fixed = ck.Graph(x, ck.Conv2d(3, 4, 3, padding=1)(x))
    assert fixed(np.zeros((2, 3, 8, 8), np.float32)).shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"Graph: input 'input' was declared with shape \(N, 3, 8, 8\), got \(1, 3, 9, 9\)"):
        fixed(np.zeros((1, 3, 9, 9), np.float32))
    x = ck.Input()
    free = ck.Graph(x, ck.Conv2d(3, 4, 3, padding=1)(x))
    assert free(np.zeros((1, 3, 9, 5), np.float32)).shape == (1, 4, 9, 5)


def test_layers_assigned_as_model_attributes_are_refused_at_assignment():
    # A torch-style model would silently have no parameters (and backward said "called before forward").
    class Net(ck.Model):
        def __init__(self):
            super().__init__()
            self.fc = ck.Linear(3, 2)

    with pytest.raises(TypeError, match=r"Net: cannot assign a Linear to attribute 'fc': a ck model does not "
                                        r"collect layers from its attributes.*ck\.Sequential\(.*ck\.Graph\("):
        Net()

    class Early(ck.Model):
        def __init__(self):
            self.conv = ck.Conv2d(1, 1, 1)    # before super().__init__()
    with pytest.raises(TypeError, match=r"^Early: cannot assign a Conv2d to attribute 'conv'"):
        Early()
    model = ck.Sequential(ck.Linear(3, 2))
    for value in [ck.ReLU(), ck.Sequential(ck.ReLU()), [ck.ReLU(), ck.ReLU()], {"a": ck.ReLU()}]:
        with pytest.raises(TypeError, match=rf"Sequential: cannot assign a {type(value).__name__} to attribute "
                                            r"'head'"):
            model.head = value
    assert "head" not in model.__dict__ and len(model.parameters()) == 2

    class Wide(ck.Sequential):    # subclassing a model to configure it is fine; plain attributes are fine
        def __init__(self, width):
            super().__init__(ck.Linear(3, width), ck.ReLU())
            self.width, self.note = width, ["not", "layers"]
    w = Wide(4)
    assert w.width == 4 and len(w.parameters()) == 2 and w(np.ones((2, 3), np.float32)).shape == (2, 4)
    w.name = "wide"
    with pytest.raises(TypeError, match=r"Wide 'wide': cannot assign a Linear to attribute 'extra'"):
        w.extra = ck.Linear(4, 1)
    # the library's own models (Sequential slices, Graph, zoo models, copies, prefixes) keep working
    part = w[:1]
    assert len(part.parameters()) == 2 and w.copy().width == 4
    resnet = ck.zoo.resnet20(seed=0)
    assert len(ck.zoo.features(resnet, "layer1").parameters()) > 0
    resnet.replace_head(3)
    assert resnet.output_shape((1, 3, 32, 32)) == (1, 3)
