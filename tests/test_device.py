"""model.to("cuda") and the device glue above the kernels, on the strict CuPy stand-in of tests/helpers/fakecupy.py.

The stand-in routes every cnnkit.ops._cuda call to the CPU kernel it mirrors, so a "device" run must equal the
CPU run bit for bit; and it refuses every implicit host/device mix, and counts every device-to-host read, so
these tests also show that the layers, the model and the optimizer keep their arrays on the device and read
nothing back inside a step. The ops one by one are typed over devices in tests/ops/; the CUDA kernels themselves
are tested by tests/ops/ and tests/test_cuda_*.py on a GPU and by tests/test_cuda_emu.py on the CPU.
"""
import copy
import re

import numpy as np
import pytest

import cnnkit as ck

from helpers import fakecupy


@pytest.fixture
def cp(monkeypatch):
    return fakecupy.install(monkeypatch)


def rnd(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def on_host(a):
    return a.get() if isinstance(a, fakecupy.ndarray) else a


# one model per layer kind (input shape, model); every layer of cnnkit.layers appears
def _cases():
    x4 = (3, 4, 9, 8)
    inp = ck.Input((4, 9, 8))
    a = ck.Conv2d(4, 4, 3, padding=1, seed=1)(inp)
    b = ck.Conv2d(4, 4, 1, seed=2)(inp)
    res = ck.Graph(inp, ck.ReLU()(ck.Add()(a, b)))
    cat = ck.Graph(inp, ck.Concat()(ck.Conv2d(4, 2, 1, seed=3)(inp), inp))
    return [
        ("conv", x4, ck.Sequential(ck.Conv2d(4, 6, 3, stride=2, padding=1, seed=0))),
        ("conv_groups_dil", x4, ck.Sequential(ck.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, seed=0))),
        ("maxpool", x4, ck.Sequential(ck.MaxPool2d(3, stride=2, padding=1))),
        ("avgpool", x4, ck.Sequential(ck.AvgPool2d(3, stride=2, padding=1, count_include_pad=False))),
        ("gap", x4, ck.Sequential(ck.GlobalAvgPool2d(), ck.Flatten(), ck.Linear(4, 3, seed=0))),
        ("relu_leaky", x4, ck.Sequential(ck.ReLU(), ck.LeakyReLU(0.1))),
        ("linear", (5, 7), ck.Sequential(ck.Linear(7, 4, seed=0), ck.ReLU(), ck.Linear(4, 3, seed=1))),
        ("dropout", x4, ck.Sequential(ck.Dropout(0.3))),
        ("batchnorm2d", x4, ck.Sequential(ck.BatchNorm2d(4))),
        ("batchnorm1d", (6, 5), ck.Sequential(ck.BatchNorm1d(5))),
        ("batchnorm_cumulative", x4, ck.Sequential(ck.BatchNorm2d(4, momentum=None))),
        ("lrn", x4, ck.Sequential(ck.LocalResponseNorm(3))),
        ("locally_connected", (2, 3, 6, 6), ck.Sequential(ck.LocallyConnected2d(3, 2, 3, in_size=(6, 6), seed=0))),
        ("dropconnect", (5, 7), ck.Sequential(ck.DropConnect(7, 4, p=0.3, seed=0))),
        ("fractional_maxpool", x4, ck.Sequential(ck.FractionalMaxPool2d(2, output_size=(5, 4)))),
        ("stochastic_depth", x4, ck.Sequential(ck.StochasticDepth(0.4))),
        ("residual_graph", x4, res),
        ("concat_graph", x4, cat),
    ]


@pytest.mark.parametrize("name,shape,model", _cases(), ids=[c[0] for c in _cases()])
def test_every_layer_on_the_device_equals_the_cpu_and_reads_nothing_back(cp, name, shape, model):
    model.manual_seed(7)
    gpu = copy.deepcopy(model).to("cuda")
    assert gpu.device == "cuda:0" or not list(gpu.parameters()) and not list(gpu.named_buffers())
    x = rnd(*shape, seed=1)
    y = model(x)
    dy = rnd(*y.shape, seed=2)
    dx = model.backward(dy, need_dx=True)
    xd = cp.asarray(x)
    dyd = cp.asarray(dy)
    with fakecupy.counting() as c:
        yd = gpu(xd)
        dxd = gpu.backward(dyd, need_dx=True)
    assert c.syncs == [], f"{name}: host reads inside forward/backward: {c.syncs}"
    assert isinstance(yd, fakecupy.ndarray) and isinstance(dxd, fakecupy.ndarray)
    # BatchNorm runs on CuPy reductions on a GPU and on a fused C++ kernel (float64 moments) on the CPU: the
    # same formulas summed in another order, so float32 rounding apart; everything else is bit for bit.
    same = np.testing.assert_array_equal if "batchnorm" not in name else (
        lambda a, b, err_msg="": np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=err_msg))
    same(yd.get(), y)
    same(dxd.get(), dx)
    for (n, p), (_, q) in zip(model.named_parameters(), gpu.named_parameters()):
        assert isinstance(q.data, fakecupy.ndarray) and isinstance(q.grad, fakecupy.ndarray), n
        same(q.grad.get(), p.grad, err_msg=n)
    for (n, b), (_, bd) in zip(model.named_buffers(), gpu.named_buffers()):
        same(on_host(bd), b, err_msg=n)


def _spatial_cases():
    x4 = (3, 4, 9, 8)
    return [
        ("conv_transpose", x4, ck.Sequential(ck.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                                                groups=2, seed=0))),
        ("conv_same_even", x4, ck.Sequential(ck.Conv2d(4, 3, 4, padding="same", seed=0))),
        ("conv_reflect", x4, ck.Sequential(ck.Conv2d(4, 3, 3, padding=2, padding_mode="reflect", seed=0))),
        ("conv_circular", x4, ck.Sequential(ck.Conv2d(4, 3, 3, padding=(1, 2), padding_mode="circular", seed=0))),
        ("zeropad_upsample", x4, ck.Sequential(ck.ZeroPad2d((1, 0, 2, 1)), ck.Upsample(size=(17, 13)),
                                               ck.Upsample(scale_factor=2))),
        ("upsample_bilinear", x4, ck.Sequential(ck.Upsample(size=(17, 5), mode="bilinear"),
                                                ck.Upsample(scale_factor=2, mode="bilinear", align_corners=True))),
        ("dropout2d", x4, ck.Sequential(ck.Dropout2d(0.3))),
        ("adaptive_maxpool", x4, ck.Sequential(ck.AdaptiveMaxPool2d((4, 3)))),
        ("maxpool_indices", x4, ck.Sequential(ck.MaxPool2d(2, return_indices=True))),
    ]


@pytest.mark.parametrize("name,shape,model", _spatial_cases(), ids=[c[0] for c in _spatial_cases()])
def test_spatial_layers_on_the_device_equal_the_cpu_and_read_nothing_back(cp, name, shape, model):
    test_every_layer_on_the_device_equals_the_cpu_and_reads_nothing_back(cp, name, shape, model)


def test_to_moves_back_and_keeps_the_parameter_objects(cp):
    model = ck.Sequential(ck.Conv2d(2, 3, 3, seed=0), ck.BatchNorm2d(3), ck.Flatten(), ck.Linear(12, 2, seed=1))
    before = model.parameters()
    w0 = model.parameters()[0].data.copy()
    assert model.device == "cpu"
    assert model.to("cuda") is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in before]
    assert model.device == "cuda:0"
    assert all(isinstance(b, fakecupy.ndarray) for _, b in model.named_buffers())
    model.to("cpu")
    assert model.device == "cpu"
    assert all(isinstance(p.data, np.ndarray) and isinstance(p.grad, np.ndarray) for p in model.parameters())
    np.testing.assert_array_equal(model.parameters()[0].data, w0)


def test_to_moves_an_optimizers_flat_buffer_whole(cp):
    model = ck.Sequential(ck.Linear(4, 3, seed=0), ck.ReLU(), ck.Linear(3, 2, seed=1))
    opt = ck.optim.SGD(model.parameters(), lr=0.1)
    flat = opt._flats[0]
    model.to("cuda")
    assert opt._flats[0] is flat and isinstance(flat.data, fakecupy.ndarray)
    for p in model.parameters():
        assert p.data.base is flat.data and p.grad.base is flat.grad


def test_to_device_and_dtype_together(cp):
    model = ck.Sequential(ck.Linear(4, 3, seed=0))
    model.to("cuda", dtype=np.float64)
    assert model.device == "cuda:0" and model.parameters()[0].dtype == np.float64


@pytest.mark.parametrize("bad,err,match", [
    ("gpu", ValueError, r"device must be 'cpu', 'cuda' or 'cuda:N' \(N a device index\), got 'gpu'"),
    ("cuda:x", ValueError, "got 'cuda:x'"),
    ("cuda:3", ValueError, r"device must name one of the 1 CUDA device\(s\) \(cuda:0 to cuda:0\), got 'cuda:3'"),
])
def test_to_rejects_bad_devices(cp, bad, err, match):
    with pytest.raises(err, match=match):
        ck.Sequential(ck.ReLU()).to(device=bad)


def test_to_rejects_bad_dtypes():
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int32"):
        ck.Sequential(ck.Linear(2, 2)).to(np.int32)
    with pytest.raises(TypeError, match="expected a device"):
        ck.Sequential(ck.Linear(2, 2)).to("fp32")


def test_to_cuda_without_cuda_says_why():
    if ck.cuda.is_available():
        pytest.skip("CUDA is usable here")
    with pytest.raises(RuntimeError, match="device='cuda' needs CUDA, which is not usable here: "
                                           + re.escape(ck.cuda.status())):
        ck.Sequential(ck.Linear(2, 2)).to("cuda")


def test_mixing_a_host_input_with_a_device_model_is_a_clear_error(cp):
    model = ck.Sequential(ck.Conv2d(2, 3, 3, seed=0)).to("cuda")
    with pytest.raises(TypeError, match="mixed devices"):
        model(rnd(1, 2, 5, 5))


# ---------------------------------------------------------------- optimizer and trainer on the device

from helpers.train_helpers import digits, digits_net  # noqa: E402


def _digits_small():
    d = digits()
    take = lambda ds, n: ds[np.arange(n)]   # noqa: E731
    return take(d["train"], 256), take(d["val"], 96)


def _trainer(device, opt_cls, log_every=None, **kw):
    model = digits_net(0)
    if device != "cpu":
        model.to(device)
    opt = opt_cls(model.parameters())
    return ck.Trainer(model, opt, schedule=ck.schedules.Cosine(opt, T_max=2), progress=False,
                      log_every=log_every, ratio_every=3, **kw)


def _same_run(a, b):
    assert a.history.iterations == b.history.iterations
    assert a.history.ratios == b.history.ratios
    for ea, eb in zip(a.history.epochs, b.history.epochs):
        assert {k: v for k, v in ea.items() if k not in ("seconds", "images_per_s")} == \
               {k: v for k, v in eb.items() if k not in ("seconds", "images_per_s")}
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        np.testing.assert_array_equal(on_host(q.data), on_host(p.data), err_msg=n)


@pytest.mark.parametrize("opt", [lambda ps: ck.optim.Adam(ps, lr=2e-3),
                                 lambda ps: ck.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)],
                         ids=["adam", "nesterov"])
def test_fit_on_the_device_equals_fit_on_the_cpu(cp, opt):
    train, val = _digits_small()
    cpu = _trainer("cpu", opt)
    cpu.fit(train, val, epochs=2, batch_size=32)
    gpu = _trainer("cuda", opt, log_every=3)
    gpu.fit(train, val, epochs=2, batch_size=32)
    assert gpu.model.device == "cuda:0"
    _same_run(cpu, gpu)
    assert len(gpu.history.iterations["loss"]) == 16 and len(gpu.history.ratios) == 6


def test_a_training_step_on_the_device_reads_nothing_back(cp):
    train, _ = _digits_small()
    tr = _trainer("cuda", lambda ps: ck.optim.Adam(ps, lr=1e-3))
    x, y = train
    xd = cp.asarray(np.ascontiguousarray(x[:32]))
    for _ in range(2):   # the first step allocates the optimizer state
        with fakecupy.counting() as c:
            loss, correct = tr.train_step(xd, y[:32])
            tr.step += 1
        assert c.syncs == [], c.syncs
        assert isinstance(loss, fakecupy.ndarray) and loss.shape == ()


def test_fit_on_the_device_reads_back_once_per_log_interval(cp):
    train, _ = _digits_small()
    tr = _trainer("cuda", lambda ps: ck.optim.Adam(ps, lr=1e-3), log_every=4)
    with fakecupy.counting() as c:
        tr.fit(train, None, epochs=1, batch_size=32)   # 8 steps: reads after steps 4 and 8
    where = [w for _, w in c.syncs]
    flushes = [w for w in where if w.startswith("_progress.py")]
    assert len(flushes) == 2, c.syncs
    # the rest: the optimizer's skip counter, read once for the epoch's log line
    assert len(where) - len(flushes) <= 1, c.syncs
    # one copy of the images per batch (made by the loader, on its prefetch thread), and of the labels for
    # the loss and for the accuracy count; nothing else
    where = sorted(w.split(":")[0] for _, w in c.h2d)
    assert where == ["loader.py"] * 8 + ["losses.py"] * 8 + ["trainer.py"] * 8, c.h2d


def test_resume_on_the_device_is_bit_exact(cp, tmp_path):
    train, val = _digits_small()
    full = _trainer("cuda", lambda ps: ck.optim.Adam(ps, lr=2e-3), log_every=3)
    full.fit(train, val, epochs=2, batch_size=32)
    first = _trainer("cuda", lambda ps: ck.optim.Adam(ps, lr=2e-3), log_every=3)
    first.fit(train, val, epochs=1, batch_size=32, checkpoint_dir=str(tmp_path))
    second = _trainer("cuda", lambda ps: ck.optim.Adam(ps, lr=2e-3), log_every=3)
    second.fit(train, val, epochs=2, batch_size=32, resume=str(tmp_path))
    _same_run(full, second)


def test_a_cpu_checkpoint_resumes_on_the_device(cp, tmp_path):
    train, val = _digits_small()
    full = _trainer("cpu", lambda ps: ck.optim.Adam(ps, lr=2e-3))
    full.fit(train, val, epochs=2, batch_size=32)
    first = _trainer("cpu", lambda ps: ck.optim.Adam(ps, lr=2e-3))
    first.fit(train, val, epochs=1, batch_size=32, checkpoint_dir=str(tmp_path))
    second = _trainer("cuda", lambda ps: ck.optim.Adam(ps, lr=2e-3), log_every=3)
    second.fit(train, val, epochs=2, batch_size=32, resume=str(tmp_path))
    _same_run(full, second)


def test_quit_early_on_the_device_is_seen_at_the_next_read(cp):
    train, _ = _digits_small()
    tr = _trainer("cuda", lambda ps: ck.optim.SGD(ps, lr=1e4), log_every=3, quit_factor=3.0)
    tr.fit(train, None, epochs=2, batch_size=32)
    assert tr.history.stop_reason and "iteration" in tr.history.stop_reason
    assert len(tr.history.iterations["loss"]) % 3 == 0 and len(tr.history.iterations["loss"]) < 16


def test_ema_and_predict_on_the_device(cp):
    train, val = _digits_small()
    runs = []
    for device in ("cpu", "cuda"):
        ema = ck.train.EMA(0.9)
        tr = _trainer(device, lambda ps: ck.optim.Adam(ps, lr=2e-3), callbacks=[ema])
        tr.fit(train, None, epochs=1, batch_size=32)
        with ema.applied(tr.model):
            runs.append(tr.predict(val[0]))
    assert isinstance(runs[1], np.ndarray)
    np.testing.assert_array_equal(runs[1], runs[0])


def test_a_device_checkpoint_resumes_on_the_cpu(cp, tmp_path):
    train, val = _digits_small()
    full = _trainer("cpu", lambda ps: ck.optim.Adam(ps, lr=2e-3))
    full.fit(train, val, epochs=2, batch_size=32)
    first = _trainer("cuda", lambda ps: ck.optim.Adam(ps, lr=2e-3), log_every=3)
    first.fit(train, val, epochs=1, batch_size=32, checkpoint_dir=str(tmp_path))
    second = _trainer("cpu", lambda ps: ck.optim.Adam(ps, lr=2e-3))
    second.fit(train, val, epochs=2, batch_size=32, resume=str(tmp_path))
    _same_run(full, second)


def test_fit_with_gpu_augmentation_equals_the_cpu(cp):
    train, val = _digits_small()
    aug = lambda: ck.data.Compose([ck.data.RandomCrop(8, padding=1), ck.data.RandomHorizontalFlip()])  # noqa: E731
    runs = []
    for device in ("cpu", "cuda"):
        tr = _trainer(device, lambda ps: ck.optim.SGD(ps, lr=0.05, momentum=0.9), log_every=4)
        loader = ck.data.DataLoader(train, 32, shuffle=True, seed=3, transform=aug(), device=None if device == "cpu" else device)
        with fakecupy.counting() as c:
            tr.fit(loader, val, epochs=2)
        runs.append(tr)
        if device == "cuda":
            assert not [w for _, w in c.syncs if not w.startswith(("trainer.py", "_progress.py", "optimizer.py"))], c.syncs
    _same_run(*runs)


# ---------------------------------------------------------------- CuPy detection has one home (cnnkit._xp)

def test_cupy_is_detected_and_imported_only_in_xp():
    import os
    pkg = os.path.dirname(ck.__file__)
    offenders = []
    for root, _, files in os.walk(pkg):
        for f in files:
            path = os.path.join(root, f)
            if not f.endswith(".py") or os.path.relpath(path, pkg) == "_xp.py":
                continue
            src = open(path, encoding="utf-8").read()
            if re.search(r"^\s*(import cupy|from cupy)\b|__module__\.startswith\(\"cupy\"\)", src, re.M):
                offenders.append(os.path.relpath(path, pkg))
    assert offenders == []


def test_require_cupy_says_how_to_install_it(monkeypatch):
    import sys
    from cnnkit import _xp
    monkeypatch.setitem(sys.modules, "cupy", None)   # `import cupy` raises ImportError
    with pytest.raises(ImportError, match=r"CuPy is not importable \(ModuleNotFoundError: .*\); install it with "
                                          r"pip install 'cnnkit\[cuda\]'"):
        _xp.require_cupy()
    assert ck.cuda._cupy_error().startswith("CuPy is not importable (ModuleNotFoundError: ")


def test_stand_in_refuses_a_host_array_reaching_a_device_kernel(cp):
    from cnnkit.ops import _cuda
    x = cp.asarray(rnd(2, 3))
    with pytest.raises(TypeError, match=r"a numpy array cannot meet a \(fake\) cupy array"):
        _cuda.relu_fwd(x, np.empty((2, 3), np.float32))
    y = cp.asarray(np.zeros((2, 3), np.float32))
    _cuda.relu_fwd(x, y)   # the routed CPU kernel writes into the fake output's buffer
    np.testing.assert_array_equal(y.get(), np.maximum(x.get(), 0))
