# A ck.Module where a Sequential works: the Trainer (the same run, bit for bit, as the same network built as a
# Sequential), parameters / state dicts, train / eval, zero_grad, to("cuda") on the CuPy stand-in, gradcheck,
# summary, apply, named_children, freeze, copies, and save refusing the class itself.
import copy

import numpy as np
import pytest

import cnnkit as ck
import cnnkit.functional as F

from helpers import fakecupy


class Small(ck.Module):
    def __init__(self):
        super().__init__()
        self.conv = ck.Conv2d(1, 4, 3, padding=1, seed=1)
        self.bn = ck.BatchNorm2d(4)
        self.drop = ck.Dropout(0.25)
        self.fc = ck.Linear(4 * 4 * 4, 3, seed=2)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(self.drop(F.flatten(x, 1)))


def _sequential():
    return ck.Sequential(ck.Conv2d(1, 4, 3, padding=1, seed=1, name="conv"), ck.BatchNorm2d(4, name="bn"), ck.ReLU(),
                         ck.MaxPool2d(2), ck.Flatten(), ck.Dropout(0.25, name="drop"), ck.Linear(64, 3, seed=2,
                                                                                                   name="fc"))


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


def test_trainer_fit_equals_the_same_network_as_a_sequential():
    x, y = _data()
    runs = []
    for model in (Small(), _sequential()):
        model.manual_seed(3)
        opt = ck.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        hist = ck.Trainer(model, opt, progress=False).fit((x, y), val=(x[:16], y[:16]), epochs=2, batch_size=16,
                                                          plots=False)
        runs.append((hist, model.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert len(h1.iterations["loss"]) == 6 and h1.iterations["loss"] == h2.iterations["loss"]
    assert h1["val_loss"] == h2["val_loss"] and h1["val_acc"] == h2["val_acc"]
    assert list(s1) == list(s2)
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k], err_msg=k)


def test_trainer_predict_and_evaluate_record_nothing():
    x, y = _data(20)
    m = Small()
    tr = ck.Trainer(m, ck.optim.SGD(m.parameters(), lr=0.1), progress=False)
    p = tr.predict(x, batch_size=8)
    assert p.shape == (20, 3) and isinstance(p, np.ndarray)
    assert m.__dict__["_last"] is None
    assert set(tr.evaluate((x, y))) == {"loss", "acc"}


def test_state_dict_round_trip_train_eval_zero_grad():
    x, _ = _data(8)
    a, b = Small(), Small()
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    assert not a.bn.training and not a.drop.training and not a.training
    np.testing.assert_array_equal(a(x).data, b(x).data)
    assert a.train() is a and a.bn.training and a.drop.training
    out = a(x)
    a.backward(np.ones(out.shape, dtype=np.float32))
    assert np.abs(a.conv.weight.grad).sum() > 0
    a.zero_grad()
    assert all(not p.grad.any() for p in a.parameters())
    with pytest.raises(ck.zoo.StateDictError, match="missing"):
        a.load_state_dict({k: v for k, v in b.state_dict().items() if k != "fc.bias"})


def test_to_cuda_on_the_stand_in_equals_the_cpu(monkeypatch):
    cp = fakecupy.install(monkeypatch)
    x, _ = _data(6)
    cpu = Small()
    cpu.manual_seed(5)
    gpu = copy.deepcopy(cpu)
    params = [id(p) for p in gpu.parameters()]
    assert gpu.to("cuda") is gpu and gpu.device == "cuda:0"
    assert [id(p) for p in gpu.parameters()] == params
    y = cpu(x)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    dx = cpu.backward(dy, need_dx=True)
    yd = gpu(cp.asarray(x))
    assert isinstance(yd.data, fakecupy.ndarray) and yd.device == "cuda:0"
    dxd = gpu.backward(cp.asarray(dy), need_dx=True)
    np.testing.assert_allclose(yd.data.get(), y.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dxd.get(), dx, rtol=1e-5, atol=1e-6)
    for (n, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        np.testing.assert_allclose(q.grad.get(), p.grad, rtol=1e-5, atol=1e-6, err_msg=n)


def test_gradcheck_summary_apply_children_freeze():
    x, _ = _data(4)
    assert ck.gradcheck(Small(), x.astype(np.float64), max_coords=8).ok
    m = Small()
    text = m.summary((1, 8, 8), print_fn=None)
    lines = text.splitlines()
    assert lines[2].split()[:3] == ["conv", "Conv2d", "(N,"]
    assert any(r.startswith("F.max_pool2d") for r in lines)
    assert "trainable params: 243" in text          # conv 36 + 4, bn 8, fc 192 + 3
    assert sum(p.size for p in m.parameters()) == 4 * 9 + 4 + 8 + 64 * 3 + 3
    seen = []
    m.apply(lambda layer: seen.append(type(layer).__name__))
    assert seen == ["Conv2d", "BatchNorm2d", "Dropout", "Linear", "Small"]
    assert [n for n, _ in m.named_children()] == ["conv", "bn", "drop", "fc"]
    m.freeze("conv", "bn")
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    m.train()
    assert not m.bn.training                         # a frozen BatchNorm keeps its running statistics
    out = m(x)
    m.backward(np.ones(out.shape, dtype=np.float32))
    assert not m.conv.weight.grad.any() and m.fc.weight.grad.any()
    m.unfreeze()
    assert all(p.requires_grad for p in m.parameters())


def test_copy_and_output_shape_and_module_in_graph():
    x, _ = _data(4)
    m = Small()
    m(x)
    c = m.copy()
    assert c.__dict__["_last"] is None
    np.testing.assert_array_equal(c.eval()(x).data, m.eval()(x).data)
    assert m.output_shape((4, 1, 8, 8)) == (4, 3)
    inp = ck.Input((1, 8, 8))
    g = ck.Graph(inp, ck.ReLU()(Small()(inp)))
    assert g(x).shape == (4, 3)


def test_save_refuses_the_class_and_says_to_save_the_state_dict(tmp_path):
    m = Small()
    with pytest.raises(TypeError, match=r"Small is a subclass of ck\.Module.*state_dict|load_state_dict"):
        m.save(tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match=r"subclass of ck\.Module"):
        ck.Sequential(m, ck.ReLU()).save(tmp_path / "s.safetensors")
    assert not list(tmp_path.iterdir())
    path = tmp_path / "w.safetensors"
    ck.zoo.export_torch_state_dict(m, path)
    m2 = Small()
    m2.load_state_dict(path)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)


def test_ema_swa_and_ensemble_take_a_module():
    x, y = _data(32)
    m = Small()
    ema, swa = ck.EMA(decay=0.9), ck.SWA(start_epoch=1)
    tr = ck.Trainer(m, ck.optim.SGD(m.parameters(), lr=0.05), callbacks=[ema, swa], progress=False)
    tr.fit((x, y), epochs=2, batch_size=8, plots=False)
    raw = {k: v.copy() for k, v in m.state_dict().items()}
    with ema.applied(m):
        assert not np.array_equal(m.fc.weight.data, raw["fc.weight"])
    np.testing.assert_array_equal(m.fc.weight.data, raw["fc.weight"])
    swa.finalize(tr, (x, y))
    with swa.applied(m):
        assert tr.predict(x).shape == (32, 3)
    p = ck.Ensemble([m, Small()]).predict_proba(x, batch_size=8)
    assert p.shape == (32, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert m.__dict__["_last"] is None or m.__dict__["_last"][1].shape == (32, 3)


def test_the_readme_first_example_runs(tmp_path, monkeypatch):
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Using the library\n\n```python\n(.*?)```", text, re.S).group(1)
    assert "class Net(ck.Module)" in block and "loss.backward()" in block
    block = block.replace("epochs=10", "epochs=2")
    monkeypatch.chdir(tmp_path)
    env = {"__name__": "readme"}
    exec(compile(block, "README.md", "exec"), env)
    assert env["trainer"].evaluate(env["splits"]["test"])["acc"] > 0.5
    assert (tmp_path / "net.safetensors").exists()


def test_lr_find_takes_a_module_and_a_loss_object():
    x, y = _data(32)
    m = Small()
    before = {k: p.data.copy() for k, p in m.named_parameters()}
    res = ck.lr_find(m, ck.nn.CrossEntropyLoss(), [(x[:16], y[:16]), (x[16:], y[16:])], num_steps=12)
    assert len(res.lrs) == len(res.losses) > 0 and all(np.isfinite(res.losses[:3]))
    assert res.losses[0] != res.losses[-1]
    for k, p in m.named_parameters():         # the range test puts the parameters back
        np.testing.assert_array_equal(p.data, before[k], err_msg=k)


def test_freeze_after_building_the_optimizer_stops_decay_and_momentum():
    net = Small()
    opt = ck.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.1)
    loss_fn = ck.nn.CrossEntropyLoss()
    x, y = _data(8)
    for k in range(4):
        if k == 2:
            net.freeze("conv")
            frozen = {n: p.data.copy() for n, p in net.named_parameters() if n.startswith("conv.")}
            fc = net.fc.weight.data.copy()
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
    for n, p in net.named_parameters():
        if n in frozen:
            np.testing.assert_array_equal(p.data, frozen[n], err_msg=n)
    assert not np.array_equal(net.fc.weight.data, fc)
    net.unfreeze("conv")
    opt.zero_grad()
    loss_fn(net(x), y).backward()
    opt.step()
    assert not np.array_equal(net.conv.weight.data, frozen["conv.weight"])
