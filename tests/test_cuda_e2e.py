"""A few training steps of the reference net (bench/cases.json "e2e") on the GPU against the CPU
(a few end-to-end steps of the reference net on the GPU match the CPU in loss), and the whole
trainer on the GPU against the CPU on the bundled digits.

Needs a GPU, a CUDA build of cnnkit and CuPy; skipped otherwise with cnnkit.cuda.status() as the reason.
Written on a machine with no GPU: NOT run yet. (The same glue runs on every machine against the CuPy stand-in
in tests/test_device.py.)
"""
import copy

import numpy as np
import pytest

import cnnkit as ck

needs_cuda = pytest.mark.skipif(not ck.cuda.is_available(), reason=f"CUDA unavailable: {ck.cuda.status()}")



def reference_net():
    """cases.json's e2e net: conv3x3(3->32)-relu-pool, (32->64), (64->128), flatten, linear 2048->256, relu,
    dropout 0.5, linear 256->10."""
    ck.manual_seed(0)
    model = ck.Sequential(
        ck.Conv2d(3, 32, 3, padding=1, seed=0), ck.ReLU(), ck.MaxPool2d(2),
        ck.Conv2d(32, 64, 3, padding=1, seed=3), ck.ReLU(), ck.MaxPool2d(2),
        ck.Conv2d(64, 128, 3, padding=1, seed=6), ck.ReLU(), ck.MaxPool2d(2),
        ck.Flatten(), ck.Linear(2048, 256, seed=10), ck.ReLU(), ck.Dropout(0.5), ck.Linear(256, 10, seed=13))
    model.manual_seed(1)
    return model


@needs_cuda
@pytest.mark.parametrize("opt_cls", [ck.optim.Adam, ck.optim.SGD], ids=["adam", "sgd"])
def test_reference_net_steps_on_the_gpu_match_the_cpu_in_loss(opt_cls):
    import cupy as cp
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((32, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 32))
               for _ in range(5)]
    cpu = reference_net()
    gpu = copy.deepcopy(cpu).to("cuda")
    kw = dict(lr=1e-3) if opt_cls is ck.optim.Adam else dict(lr=0.01, momentum=0.9)
    runs = []
    for model in (cpu, gpu):
        opt = opt_cls(model.parameters(), **kw)
        tr = ck.Trainer(model, opt, progress=False, ratio_every=0)
        losses = []
        for x, y in batches:
            x = cp.asarray(x) if model is gpu else x
            loss, _ = tr.train_step(x, y)
            losses.append(float(loss))
        runs.append(losses)
    # float32 convolutions summed in another order (implicit GEMM with split-K vs im2col + sgemm): the loss
    # agrees to float32 accumulation error, and stays so over steps since the dropout masks are identical.
    np.testing.assert_allclose(runs[1], runs[0], rtol=2e-4)
    for (n, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        np.testing.assert_allclose(q.data.get(), p.data, rtol=1e-3, atol=1e-5, err_msg=n)


@needs_cuda
def test_fit_on_the_gpu_matches_the_cpu_on_digits():
    d = ck.data.load_digits()
    hists = []
    for device in ("cpu", "cuda"):
        ck.manual_seed(0)
        model = ck.Sequential(ck.Conv2d(1, 16, 3, padding=1), ck.ReLU(), ck.MaxPool2d(2), ck.Flatten(),
                              ck.Linear(256, 10))
        model.to(device)
        opt = ck.optim.Adam(model.parameters(), lr=2e-3)
        tr = ck.Trainer(model, opt, progress=False)
        hists.append(tr.fit(d["train"], d["val"], epochs=2, batch_size=32))
        if device == "cuda":
            assert tr.evaluate(d["test"])["acc"] > 0.9
    np.testing.assert_allclose(hists[1].iterations["loss"], hists[0].iterations["loss"], rtol=1e-3)
    assert abs(hists[1].epochs[-1]["val_acc"] - hists[0].epochs[-1]["val_acc"]) <= 0.01
