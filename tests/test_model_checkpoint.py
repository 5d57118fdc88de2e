# ck.train.ModelCheckpoint (Keras's): the file holds the weights of the best epoch by the monitored History key
# (max or min), a filepath with format fields gets one file per epoch, a bad monitor or field is an error at
# the first epoch end naming what is logged, save_weights_only writes a state dict torch's names and
# safetensors read; fit(run_dir=...) keeps best.safetensors by default, through a resume, and `cnnkit train`'s
# result.json says which epoch it holds.
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

import cnnkit as ck
import cnnkit.functional as F
from cnnkit.config import load_config
from cnnkit.run import run_training
from helpers.train_helpers import digits, digits_net, weights


@pytest.fixture(scope="module")
def data():
    return digits()


class RecordWeights(ck.train.Callback):
    """The weights at every epoch end (before any later callback could change them)."""

    def __init__(self):
        self.at = []

    def on_epoch_end(self, trainer, epoch, logs):
        self.at.append(weights(trainer.model))


def fit(data, epochs, callbacks, lr=2e-3, val=True, **kw):
    model = digits_net(0)
    rec = RecordWeights()
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=lr), callbacks=[rec, *callbacks], progress=False)
    tr.fit(data["train"], data["val"] if val else None, epochs=epochs, batch_size=64, **kw)
    return tr, rec.at


def same_weights(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_the_file_holds_the_best_val_acc_epoch(tmp_path, data):
    path = tmp_path / "best.safetensors"
    cb = ck.train.ModelCheckpoint(str(path))            # monitor val_acc, mode auto (max), best only
    tr, at = fit(data, 4, [cb], lr=5e-3)
    acc = tr.history["val_acc"]
    best = int(np.argmax(acc))                          # the first epoch that reached the maximum
    assert cb.mode == "max" and cb.best == acc[best] and cb.best_epoch == best + 1 and cb.best_path == str(path)
    loaded = ck.load(str(path))                         # a Sequential: the whole model
    assert same_weights(weights(loaded), at[best])
    probe = ck.Trainer(loaded, ck.optim.SGD(loaded.parameters(), lr=0.1), progress=False)
    assert probe.evaluate(data["val"])["acc"] == acc[best]


def test_mode_min_on_val_loss_with_weights_only_writes_a_state_dict(tmp_path, data):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load_file
    path = tmp_path / "w.safetensors"
    cb = ck.train.ModelCheckpoint(str(path), monitor="val_loss", save_weights_only=True)
    tr, at = fit(data, 3, [cb], lr=5e-3)
    loss = tr.history["val_loss"]
    best = int(np.argmin(loss))
    assert cb.mode == "min" and cb.best_epoch == best + 1 and cb.best == loss[best]
    sd = torch_load_file(str(path))                     # torch reads it: torch's names, torch tensors
    assert set(sd) == set(at[best]) and all(isinstance(v, torch.Tensor) for v in sd.values())
    assert all(np.array_equal(sd[k].numpy(), at[best][k]) for k in sd)
    model = digits_net(1)
    model.load_state_dict(str(path))
    assert same_weights(weights(model), at[best])


def test_format_fields_give_one_file_per_epoch_named_from_its_logs(tmp_path, data):
    cb = ck.ModelCheckpoint(str(tmp_path / "ck" / "e{epoch:02d}-{val_acc:.3f}.safetensors"), save_best_only=False)
    tr, at = fit(data, 3, [cb])
    want = [f"e{i + 1:02d}-{v:.3f}.safetensors" for i, v in enumerate(tr.history["val_acc"])]
    assert sorted(os.listdir(tmp_path / "ck")) == sorted(want)
    for name, w in zip(want, at):
        assert same_weights(weights(ck.load(str(tmp_path / "ck" / name))), w)


def test_a_monitor_that_is_not_logged_fails_at_the_first_epoch_end_naming_the_logged_keys(tmp_path, data):
    cb = ck.train.ModelCheckpoint(str(tmp_path / "b.safetensors"), monitor="val_accuracy")
    model = digits_net(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters()), callbacks=[cb], progress=False)
    with pytest.raises(ValueError, match=r"ModelCheckpoint: metric 'val_accuracy' is not logged; logged: \[.*"
                                         r"'train_acc', 'train_loss', 'val_acc', 'val_loss'\]"):
        tr.fit(data["train"], data["val"], epochs=3, batch_size=64)
    assert len(tr.history.epochs) == 1
    # val_* without validation data: the message says so
    cb = ck.train.ModelCheckpoint(str(tmp_path / "b.safetensors"))
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters()), callbacks=[cb], progress=False)
    with pytest.raises(ValueError, match=r"metric 'val_acc' is not logged; .*val_\* needs fit\(val=\.\.\.\)"):
        tr.fit(data["train"], None, epochs=1, batch_size=64)
    cb = ck.train.ModelCheckpoint(str(tmp_path / "{val_top5:.2f}.safetensors"))
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters()), callbacks=[cb], progress=False)
    with pytest.raises(ValueError, match=r"ModelCheckpoint: filepath .* names 'val_top5', which is not logged; "
                                         r"logged: \["):
        tr.fit(data["train"], data["val"], epochs=1, batch_size=64)
    assert not any(n.endswith(".safetensors") for n in os.listdir(tmp_path))


@pytest.mark.parametrize("kw,exc,match", [
    (dict(filepath=3), TypeError, r"ModelCheckpoint: filepath must be a path \(str or os.PathLike\), got int"),
    (dict(filepath="best.pt"), ValueError, r"ModelCheckpoint: filepath must end in .safetensors .*got 'best.pt'"),
    (dict(filepath="e{epoch.safetensors"), ValueError, r"ModelCheckpoint: filepath 'e\{epoch.safetensors' is not a valid format string"),
    (dict(filepath="e{}.safetensors"), ValueError, r"format fields must be named after logged metrics"),
    (dict(monitor=1), TypeError, r"ModelCheckpoint: monitor must be a metric name \(str\), got int"),
    (dict(mode="up"), ValueError, r"ModelCheckpoint: mode must be 'min', 'max' or 'auto', got 'up'"),
    (dict(save_best_only="yes"), TypeError, r"ModelCheckpoint: save_best_only must be a bool, got str"),
    (dict(save_weights_only=1), TypeError, r"ModelCheckpoint: save_weights_only must be a bool, got int"),
    (dict(verbose=-1), ValueError, r"ModelCheckpoint: verbose must be >= 0, got -1"),
])
def test_bad_arguments_name_the_argument(kw, exc, match):
    with pytest.raises(exc, match=match):
        ck.train.ModelCheckpoint(**kw)


def test_auto_mode_follows_the_name_and_verbose_says_what_it_did(tmp_path, data, capsys):
    assert ck.train.ModelCheckpoint(monitor="train_acc").mode == "max"
    assert ck.train.ModelCheckpoint(monitor="train_loss").mode == "min"
    cb = ck.train.ModelCheckpoint(str(tmp_path / "b.safetensors"), monitor="train_loss", verbose=1)
    tr, _ = fit(data, 2, [cb], val=False)
    out = capsys.readouterr().out
    first = tr.history["train_loss"][0]
    assert f"epoch 1: train_loss improved to {first:.5g}, saved the model to {tmp_path / 'b.safetensors'}" in out


class Net(ck.Module):
    def __init__(self):
        super().__init__()
        self.conv = ck.nn.Conv2d(1, 8, 3, padding=1)
        self.fc = ck.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(F.flatten(F.max_pool2d(F.relu(self.conv(x)), 2), 1))


def test_a_module_is_saved_as_weights_and_refused_whole_before_training(tmp_path, data):
    ck.manual_seed(0)
    model = Net()
    cb = ck.train.ModelCheckpoint(str(tmp_path / "m.safetensors"), save_weights_only=False)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters()), callbacks=[cb], progress=False)
    with pytest.raises(TypeError, match=r"ModelCheckpoint: save_weights_only=False needs a model ck.load can "
                                        r"rebuild; .*Net is a subclass of ck.Module.*save_weights_only=True"):
        tr.fit(data["train"], data["val"], epochs=1, batch_size=64)
    assert tr.history.iterations["step"] == []            # refused at fit start
    cb = ck.train.ModelCheckpoint(str(tmp_path / "m.safetensors"))   # the default: weights for a Module
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters()), callbacks=[cb], progress=False)
    tr.fit(data["train"], data["val"], epochs=1, batch_size=64)
    sd = load_file(str(tmp_path / "m.safetensors"))
    assert sorted(sd) == ["conv.bias", "conv.weight", "fc.bias", "fc.weight"]
    assert same_weights(sd, weights(model))


def test_fit_with_a_run_dir_keeps_best_safetensors(tmp_path, data):
    tr, at = fit(data, 4, [], lr=5e-3, run_dir=str(tmp_path / "run"), plots=False)
    acc = tr.history["val_acc"]
    best = int(np.argmax(acc))
    b = tr.best_checkpoint
    assert (b.monitor, b.best_epoch, b.best) == ("val_acc", best + 1, acc[best])
    assert b.best_path == str(tmp_path / "run" / "best.safetensors")
    assert same_weights(weights(ck.load(b.best_path)), at[best])
    assert tr.callbacks == [c for c in tr.callbacks if not isinstance(c, ck.train.ModelCheckpoint)]
    # a run folder whose name holds braces is a folder, not a format string
    tr, at = fit(data, 1, [], run_dir=str(tmp_path / "r{epoch}"), plots=False)
    assert tr.best_checkpoint.best_path == str(tmp_path / "r{epoch}" / "best.safetensors")
    assert same_weights(weights(ck.load(tr.best_checkpoint.best_path)), at[0])
    # keep_best=False: no file
    tr, _ = fit(data, 1, [], run_dir=str(tmp_path / "off"), plots=False, keep_best=False)
    assert not os.path.exists(tmp_path / "off" / "best.safetensors")
    with pytest.raises(TypeError, match=r"fit: keep_best must be a bool, got str"):
        fit(data, 1, [], run_dir=str(tmp_path / "off"), keep_best="no")


def test_best_is_by_val_loss_without_accuracy_and_by_train_metrics_without_val(tmp_path, data):
    x, y = data["train"][np.arange(len(data["train"]))]
    vx, vy = data["val"][np.arange(len(data["val"]))]
    onehot = lambda labels: np.eye(10, dtype=np.float32)[labels]   # noqa: E731  regression targets: no accuracy
    model = digits_net(0)
    rec = RecordWeights()
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3), "mse", callbacks=[rec], progress=False)
    tr.fit((x, onehot(y)), (vx, onehot(vy)), epochs=3, batch_size=64, run_dir=str(tmp_path / "r"), plots=False)
    loss = tr.history["val_loss"]
    best = int(np.argmin(loss))
    assert not tr.has_accuracy
    assert (tr.best_checkpoint.monitor, tr.best_checkpoint.best_epoch) == ("val_loss", best + 1)
    assert same_weights(weights(ck.load(str(tmp_path / "r" / "best.safetensors"))), rec.at[best])
    tr, at = fit(data, 2, [], val=False, run_dir=str(tmp_path / "t"), plots=False)
    acc = tr.history["train_acc"]
    assert tr.has_accuracy and tr.best_checkpoint.monitor == "train_acc"
    assert tr.best_checkpoint.best_epoch == int(np.argmax(acc)) + 1


def test_a_resumed_fit_keeps_the_best_of_the_whole_run(tmp_path, data):
    run, cks = str(tmp_path / "run"), str(tmp_path / "ck")
    first, _ = fit(data, 2, [], lr=5e-3, run_dir=run, checkpoint_dir=cks, plots=False)
    model = digits_net(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=5e-3), callbacks=[RecordWeights()], progress=False)
    tr.fit(data["train"], data["val"], epochs=5, batch_size=64, run_dir=run, checkpoint_dir=cks, resume=cks,
           plots=False)
    acc = tr.history["val_acc"]                   # all five epochs: two from the checkpoint, three trained here
    assert len(acc) == 5 and acc[:2] == first.history["val_acc"]
    best = int(np.argmax(acc))
    assert tr.best_checkpoint.best_epoch == best + 1 and tr.best_checkpoint.best == acc[best]
    assert best >= 2          # val_acc reaches its best (0.983, at epoch 4) after the resume
    assert same_weights(weights(ck.load(tr.best_checkpoint.best_path)), tr.callbacks[0].at[best - 2])


def test_cnnkit_train_result_json_names_the_best_epoch(tmp_path):
    cfg = load_config(None)
    cfg.update(out=str(tmp_path / "run"), epochs=3, plots=False)
    trainer, result = run_training(cfg, log=lambda *a: None, progress=False)
    acc = trainer.history["val_acc"]
    best = int(np.argmax(acc))
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["best"] == result["best"] == {"file": "best.safetensors", "epoch": best + 1, "monitor": "val_acc",
                                                 "value": acc[best]}
    assert {"best.safetensors", "model.safetensors", "result.json"} <= set(os.listdir(tmp_path / "run"))


def test_best_safetensors_of_a_run_on_the_device_equals_the_cpu_runs(tmp_path, data, monkeypatch):
    from helpers import fakecupy
    fakecupy.install(monkeypatch)     # the strict CuPy stand-in: device arrays that refuse implicit host reads
    for device in ("cpu", "cuda"):
        model = digits_net(0)
        if device != "cpu":
            model.to(device)
        tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=5e-3), progress=False, log_every=4)
        tr.fit(data["train"][np.arange(256)], data["val"][np.arange(96)], epochs=3, batch_size=32,
               run_dir=str(tmp_path / device), plots=False)
        assert tr.best_checkpoint.best_epoch == int(np.argmax(tr.history["val_acc"])) + 1
    cpu, dev = (load_file(str(tmp_path / d / "best.safetensors")) for d in ("cpu", "cuda"))
    assert set(dev) == set(cpu) and all(np.array_equal(dev[k], cpu[k]) for k in cpu)
