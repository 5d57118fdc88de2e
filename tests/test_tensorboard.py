# ck.train.TensorBoard: the event files it writes, read back with tensorboard's own EventAccumulator, hold
# the trainer's history exactly (float32 values at the right steps), histograms of every weight and gradient,
# the first conv's filter grid as an image of the right size; the every-N options, a resume that purges what
# a crashed run logged past its checkpoint, the argument checks and the missing-extra error.
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnkit as ck
from cnnkit.train.plots import filter_grid
from helpers.train_helpers import digits, digits_net, weights

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

ALL = {k: 0 for k in ("compressedHistograms", "images", "audio", "scalars", "histograms", "tensors")}


@pytest.fixture(scope="module")
def data():
    return digits()


def read(log_dir):
    ea = event_accumulator.EventAccumulator(str(log_dir), size_guidance=ALL)
    ea.Reload()
    return ea


def f32(values):
    return [float(np.float32(v)) for v in values]


class Grads(ck.train.Callback):
    """Every parameter's gradient at each epoch end (what the epoch's last step left)."""

    def __init__(self):
        self.at = []

    def on_epoch_end(self, trainer, epoch, logs):
        self.at.append({n: p.grad.copy() for n, p in trainer.model.named_parameters()})


def test_the_event_file_holds_the_trainers_history(tmp_path, data):
    tb = ck.train.TensorBoard(str(tmp_path / "tb"))
    grads = Grads()
    model = digits_net(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3), callbacks=[grads, tb], progress=False,
                    ratio_every=7)
    hist = tr.fit(data["train"], data["val"], epochs=2, batch_size=64)
    assert tb.writer is None                      # closed at the end of fit
    ea = read(tmp_path / "tb")
    it = hist.iterations
    spe = len(ck.data.DataLoader(data["train"], batch_size=64))
    epoch_keys = ["train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s", "skipped_steps"]
    ratio_layers = {"0 Conv2d": "0_Conv2d", "2 Conv2d": "2_Conv2d", "6 Linear": "6_Linear", "9 Linear": "9_Linear"}
    assert set(ea.Tags()["scalars"]) == ({"train/loss", "train/lr"} | {f"epoch/{k}" for k in epoch_keys}
                                         | {f"ratio/{t}" for t in ratio_layers.values()})
    # every iteration, at its step, its float32 value
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr")):
        ev = ea.Scalars(tag)
        assert [e.step for e in ev] == it["step"] == list(range(1, 2 * spe + 1))
        assert [e.value for e in ev] == f32(it[key])
    # each epoch's record at the epoch's last iteration
    for k in epoch_keys:
        ev = ea.Scalars(f"epoch/{k}")
        assert [e.step for e in ev] == [spe, 2 * spe]
        assert [e.value for e in ev] == f32(hist[k]), k
    # the update/weight ratios at the iteration that made the update (the history counts from 0)
    assert [r["step"] for r in hist.ratios] == list(range(0, 2 * spe, 7))
    for layer, tag in ratio_layers.items():
        ev = ea.Scalars(f"ratio/{tag}")
        assert [e.step for e in ev] == [r["step"] + 1 for r in hist.ratios]
        assert [e.value for e in ev] == f32(r["ratios"][layer] for r in hist.ratios)
    # a weight and a gradient histogram per parameter per epoch, over all its elements; the last epoch's are
    # the final weights and the last step's gradients
    final = weights(model)
    names = [n for n, _ in model.named_parameters()]
    assert set(ea.Tags()["histograms"]) == {f"{kind}/{n}" for n in names for kind in ("weights", "grads")}
    for n in names:
        for kind, last in (("weights", final[n]), ("grads", grads.at[-1][n])):
            ev = ea.Histograms(f"{kind}/{n}")
            assert [e.step for e in ev] == [spe, 2 * spe]
            h = ev[-1].histogram_value
            assert h.num == last.size and sum(h.bucket) == last.size
            assert h.min == float(last.min()) and h.max == float(last.max())
            assert h.sum == pytest.approx(float(last.astype(np.float64).sum()), rel=1e-5, abs=1e-6)
    # the first conv's 16 filters of 3x3: a 4x4 grid with one pixel between tiles, 15 x 15, grey
    assert ea.Tags()["images"] == ["filters"]
    ev = ea.Images("filters")
    assert [e.step for e in ev] == [spe, 2 * spe]
    assert (ev[-1].width, ev[-1].height) == (4 * 3 + 3, 4 * 3 + 3)
    import matplotlib.image
    png = matplotlib.image.imread(io.BytesIO(ev[-1].encoded_image_string), format="png")
    want = filter_grid(final["0.weight"])
    assert png.shape[:2] == want.shape and np.all(png[..., 0] == png[..., 1])
    assert np.abs(png[..., 0] - want).max() <= 1 / 255 + 1e-6      # 8-bit pixels of the [0, 1] grid


def test_every_n_epochs_and_ratio_off(tmp_path, data):
    tb = ck.TensorBoard(str(tmp_path / "tb"), histogram_every=2, image_every=0, ratio=False)
    model = digits_net(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3), callbacks=[tb], progress=False)
    tr.fit(data["train"], None, epochs=3, batch_size=64)
    ea = read(tmp_path / "tb")
    spe = len(ck.data.DataLoader(data["train"], batch_size=64))
    assert not any(t.startswith("ratio/") for t in ea.Tags()["scalars"]) and ea.Tags()["images"] == []
    assert "epoch/val_acc" not in ea.Tags()["scalars"]
    assert [e.step for e in ea.Histograms("weights/0.weight")] == [2 * spe]
    assert [e.step for e in ea.Scalars("epoch/train_loss")] == [spe, 2 * spe, 3 * spe]


def test_a_resume_after_a_crash_logs_every_step_once(tmp_path, data):
    log_dir, cks = tmp_path / "tb", str(tmp_path / "ck")
    spe = len(ck.data.DataLoader(data["train"], batch_size=64))

    class Crash(ck.train.Callback):
        def on_step_end(self, trainer, step, loss):
            if step == spe + 5:
                raise RuntimeError("crash")

    def trainer(callbacks):
        model = digits_net(0)
        return ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3), callbacks=callbacks, progress=False,
                          ratio_every=0)
    tb = ck.TensorBoard(str(log_dir), histogram_every=0, image_every=0)
    with pytest.raises(RuntimeError, match="crash"):
        trainer([tb, Crash()]).fit(data["train"], data["val"], epochs=2, batch_size=64, checkpoint_dir=cks)
    tb.close()                                     # what a dying process's writer had written is on disk
    assert [e.step for e in read(log_dir).Scalars("train/loss")] == list(range(1, spe + 6))
    tb = ck.TensorBoard(str(log_dir), histogram_every=0, image_every=0)
    tr = trainer([tb, ck.train.Callback()])
    hist = tr.fit(data["train"], data["val"], epochs=2, batch_size=64, checkpoint_dir=cks, resume=cks)
    ea = read(log_dir)
    ev = ea.Scalars("train/loss")
    assert [e.step for e in ev] == list(range(1, 2 * spe + 1))      # steps spe+1.. of the crashed run purged
    assert [e.value for e in ev] == f32(hist.iterations["loss"])
    assert [e.step for e in ea.Scalars("epoch/val_acc")] == [spe, 2 * spe]
    assert [e.value for e in ea.Scalars("epoch/val_acc")] == f32(hist["val_acc"])


@pytest.mark.parametrize("kw,exc,match", [
    (dict(log_dir=None), TypeError, r"TensorBoard: log_dir must be a folder path \(str or os.PathLike\), got NoneType"),
    (dict(log_dir="x", histogram_every=-1), ValueError, r"TensorBoard: histogram_every must be >= 0, got -1"),
    (dict(log_dir="x", image_every=1.5), TypeError, r"TensorBoard: image_every must be an int"),
    (dict(log_dir="x", ratio="yes"), TypeError, r"TensorBoard: ratio must be a bool, got str"),
])
def test_bad_arguments_name_the_argument(kw, exc, match):
    with pytest.raises(exc, match=match):
        ck.train.TensorBoard(**kw)


def test_without_tensorboardx_the_error_names_the_extra_and_cnnkit_still_imports(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)        # import tensorboardX now fails
    with pytest.raises(ImportError, match=r'TensorBoard: needs tensorboardX.*pip install "cnnkit\[tensorboard\]"'):
        ck.train.TensorBoard(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorboardX")
    monkeypatch.setitem(sys.modules, "PIL", None)                 # no Pillow: images cannot be written
    with pytest.raises(ImportError, match=r'image_every > 0 needs Pillow.*pip install "cnnkit\[tensorboard\]", or '
                                          r'pass image_every=0'):
        ck.train.TensorBoard(str(tmp_path))
    assert ck.train.TensorBoard(str(tmp_path), image_every=0).image_every == 0
    code = ("import sys; sys.modules['tensorboardX'] = None; sys.modules['tensorboard'] = None\n"
            "import cnnkit as ck; print(ck.TensorBoard.__name__, ck.ModelCheckpoint.__name__)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["TensorBoard", "ModelCheckpoint"], r.stderr[-2000:]


def test_a_run_on_the_device_logs_what_the_same_run_on_the_cpu_logs(tmp_path, data, monkeypatch):
    from helpers import fakecupy
    fakecupy.install(monkeypatch)     # the strict CuPy stand-in: device arrays that refuse implicit host reads
    logs = {}
    for device in ("cpu", "cuda"):
        model = digits_net(0)
        if device != "cpu":
            model.to(device)
        tb = ck.TensorBoard(str(tmp_path / device))
        tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3), callbacks=[tb], progress=False,
                        log_every=4, ratio_every=3)
        tr.fit(data["train"][np.arange(256)], data["val"][np.arange(96)], epochs=2, batch_size=32)
        logs[device] = read(tmp_path / device)
    cpu, dev = logs["cpu"], logs["cuda"]
    assert cpu.Tags()["scalars"] and sorted(dev.Tags()["scalars"]) == sorted(cpu.Tags()["scalars"])
    for tag in cpu.Tags()["scalars"]:
        if tag not in ("epoch/seconds", "epoch/images_per_s"):
            assert [(e.step, e.value) for e in dev.Scalars(tag)] == [(e.step, e.value) for e in cpu.Scalars(tag)], tag
    assert sorted(dev.Tags()["histograms"]) == sorted(cpu.Tags()["histograms"])
    for tag in cpu.Tags()["histograms"]:
        a, b = cpu.Histograms(tag)[-1].histogram_value, dev.Histograms(tag)[-1].histogram_value
        assert (b.num, b.min, b.max, list(b.bucket)) == (a.num, a.min, a.max, list(a.bucket)), tag
    assert dev.Images("filters")[-1].encoded_image_string == cpu.Images("filters")[-1].encoded_image_string
