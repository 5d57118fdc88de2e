"""Checkpoints and resume: exact position in the epoch, crash-safe file handling, confined paths, validation
of every field before anything changes, stale temporaries, file modes."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import cnnkit as ck
from cnnkit.train import checkpoint as ckpt_mod

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def data():
    return ck.data.load_digits()


def small_trainer(callbacks=()):
    ck.manual_seed(0)
    model = ck.Sequential(ck.Flatten(), ck.Linear(64, 32), ck.ReLU(), ck.Dropout(0.2), ck.Linear(32, 10))
    model.manual_seed(0)
    opt = ck.optim.Adam(model.parameters(), lr=2e-3)
    sched = ck.schedules.Cosine(opt, T_max=40)
    return ck.Trainer(model, opt, schedule=sched, schedule_interval="step", progress=False,
                      callbacks=list(callbacks))


def weights(model):
    return {n: p.data.copy() for n, p in model.named_parameters()}


def same(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(data):
    tr = small_trainer()
    tr.fit(data["train"], data["val"], epochs=2, batch_size=64)
    return tr.step, weights(tr.model), list(tr.history.iterations["loss"])


def _pointer(folder):
    with open(os.path.join(folder, "latest.json")) as f:
        return json.load(f)


def _ckpt_doc(folder):
    with open(os.path.join(folder, _pointer(folder)["checkpoint"])) as f:
        return json.load(f)


# ---------------------------------------------------------------- position in the epoch

def test_resume_from_the_last_step_of_an_epoch_does_not_replay_it(tmp_path, data, reference):
    step, ref, losses = reference
    assert step == 38
    first = small_trainer()
    first.fit(data["train"], data["val"], epochs=1, batch_size=64, checkpoint_dir=str(tmp_path),
              checkpoint_every_steps=1, checkpoint_every=0)
    assert _ckpt_doc(str(tmp_path))["step"] == 19
    second = small_trainer()
    second.fit(data["train"], data["val"], epochs=2, batch_size=64, resume=str(tmp_path))
    assert second.step == 38 and second.epoch == 2
    assert same(ref, weights(second.model))
    assert second.history.iterations["loss"] == losses
    assert len(second.history.epochs) == 2


def test_resume_from_a_mid_epoch_checkpoint_is_bit_exact(tmp_path, data, reference):
    step, ref, losses = reference

    class Stop(ck.train.Callback):
        def on_step_end(self, trainer, step, loss):
            if step == 25:
                trainer.stop_training = True
    first = small_trainer(callbacks=[Stop()])
    first.fit(data["train"], data["val"], epochs=2, batch_size=64, checkpoint_dir=str(tmp_path),
              checkpoint_every_steps=5, checkpoint_every=0)
    assert _ckpt_doc(str(tmp_path))["step"] == 25
    second = small_trainer(callbacks=[ck.train.Callback()])
    second.fit(data["train"], data["val"], epochs=2, batch_size=64, resume=str(tmp_path))
    assert second.step == step and same(ref, weights(second.model))
    assert second.history.iterations["loss"] == losses


# ---------------------------------------------------------------- crash safety

class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no except Exception catches it."""


def _callbacks():
    return [ck.EarlyStopping(monitor="val_loss", patience=100), ck.SWA(start_epoch=1)]


def test_a_kill_inside_the_epoch_end_checkpoint_leaves_a_consistent_one(tmp_path, data, monkeypatch):
    ref = small_trainer(callbacks=_callbacks())
    ref.fit(data["train"], data["val"], epochs=2, batch_size=64)

    armed = {"on": False, "writes": 0}

    class Arm(ck.train.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            armed["on"] = True    # the next checkpoint is the epoch-end one, at the step just checkpointed
    real = ckpt_mod.atomic_write

    def killing_write(path, data_):
        if armed["on"] and os.path.basename(path) != "latest.json":
            armed["writes"] += 1
            if armed["writes"] == 2:
                raise Killed()    # after the first of the checkpoint's two files
        real(path, data_)
    monkeypatch.setattr(ckpt_mod, "atomic_write", killing_write)
    first = small_trainer(callbacks=_callbacks() + [Arm()])
    with pytest.raises(Killed):
        first.fit(data["train"], data["val"], epochs=2, batch_size=64, checkpoint_dir=str(tmp_path),
                  checkpoint_every_steps=1, checkpoint_every=1)
    monkeypatch.undo()
    assert armed["writes"] == 2
    state, _ = ckpt_mod.read_checkpoint(str(tmp_path))    # the pointer names a complete, matching pair
    assert state["step"] == 19
    second = small_trainer(callbacks=_callbacks())
    second.fit(data["train"], data["val"], epochs=2, batch_size=64, resume=str(tmp_path))
    assert second.step == ref.step and same(weights(ref.model), weights(second.model))
    assert second.history.iterations["loss"] == ref.history.iterations["loss"]


def test_checkpoints_are_never_rewritten_in_place(tmp_path, data, monkeypatch):
    written = []
    real = ckpt_mod.atomic_write

    def recording_write(path, data_):
        if os.path.basename(path) != "latest.json":
            assert not os.path.exists(path), f"{path} rewritten"
            written.append(os.path.basename(path))
        real(path, data_)
    monkeypatch.setattr(ckpt_mod, "atomic_write", recording_write)
    tr = small_trainer(callbacks=_callbacks())
    tr.fit(data["train"], data["val"], epochs=1, batch_size=64, checkpoint_dir=str(tmp_path),
           checkpoint_every_steps=1, checkpoint_every=1)
    assert len(written) == 2 * 20 and len(set(written)) == 40
    assert len([f for f in os.listdir(tmp_path) if f.startswith("ckpt-")]) == 4   # keep=2 pairs


KILL_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import numpy as np
    import cnnkit as ck
    from test_checkpoint_resume import small_trainer, _callbacks
    ck.set_num_threads(1)
    d = ck.data.load_digits()
    tr = small_trainer(callbacks=_callbacks())
    print("ready", flush=True)
    tr.fit(d["train"], d["val"], epochs=3, batch_size=64, checkpoint_dir={ckdir!r}, checkpoint_every_steps=1,
           checkpoint_every=1, resume={resume!r})
    np.savez({out!r}, step=tr.step, **{{n: p.data for n, p in tr.model.named_parameters()}})
""")


def _start(ckdir, out, resume=None):
    code = KILL_RUN.format(here=HERE, ckdir=str(ckdir), resume=resume, out=str(out))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(p):
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()[-2000:]


def test_sigkill_at_random_times_during_per_step_checkpoints_resumes_bit_exact(tmp_path):
    t_start = time.time()
    full = tmp_path / "full.npz"
    _finish(_start(tmp_path / "ck_full", full))
    ref = dict(np.load(full))
    rng = np.random.default_rng(1234)
    for trial in range(3):
        ckdir, out = tmp_path / f"ck{trial}", tmp_path / f"out{trial}.npz"
        p = _start(ckdir, out)
        assert p.stdout.readline().strip() == b"ready"
        deadline = time.time() + 30
        while not (ckdir / "latest.json").exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.communicate()
        _finish(_start(ckdir, out, resume=str(ckdir)))
        got = dict(np.load(out))
        assert int(got["step"]) == int(ref["step"]) == 57
        assert all(np.array_equal(ref[k], got[k]) for k in ref), trial
        assert not [f for f in os.listdir(ckdir) if f.endswith(".tmp")], trial   # no stale temporaries
    assert time.time() - t_start < 60


# ---------------------------------------------------------------- paths stay inside the folder

def _one_epoch(folder, data, **kw):
    tr = small_trainer()
    tr.fit(data["train"], None, epochs=1, batch_size=64, checkpoint_dir=str(folder), **kw)
    return tr


@pytest.mark.parametrize("name", ["../other/{f}", "{abs}", "sub/{f}", "..", "", 5])
def test_pointer_paths_must_stay_in_the_checkpoint_folder(tmp_path, data, name):
    other = tmp_path / "other"
    _one_epoch(other, data)
    f = _pointer(str(other))["checkpoint"]
    mine = tmp_path / "mine"
    mine.mkdir()
    if isinstance(name, str):
        name = name.format(f=f, abs=str(other / f))
    (mine / "latest.json").write_text(json.dumps({"format": "cnnkit.checkpoint", "checkpoint": name}))
    with pytest.raises(ck.train.CheckpointError, match=r"latest\.json.*'checkpoint'"):
        small_trainer().fit(data["train"], None, epochs=2, resume=str(mine))


@pytest.mark.parametrize("where", ["../other/{t}", "{abs}"])
def test_tensor_file_paths_must_stay_in_the_checkpoint_folder(tmp_path, data, where):
    other = tmp_path / "other"
    _one_epoch(other, data)
    mine = tmp_path / "mine"
    _one_epoch(mine, data)
    doc_name = _pointer(str(mine))["checkpoint"]
    doc = _ckpt_doc(str(mine))
    doc["tensors"] = where.format(t=_ckpt_doc(str(other))["tensors"], abs=str(other / _ckpt_doc(str(other))["tensors"]))
    (mine / doc_name).write_text(json.dumps(doc))
    with pytest.raises(ck.train.CheckpointError, match=doc_name.replace(".", r"\.") + r".*'tensors'"):
        small_trainer().fit(data["train"], None, epochs=2, resume=str(mine))


# ---------------------------------------------------------------- tampered checkpoints

def _tampered(folder, data, edit):
    """One epoch's checkpoint in `folder`, its JSON edited by edit(doc); -> the JSON's file name."""
    _one_epoch(folder, data)
    name = _pointer(str(folder))["checkpoint"]
    doc = _ckpt_doc(str(folder))
    edit(doc)
    (folder / name).write_text(json.dumps(doc))
    return name


def _set(path, value):
    def edit(doc):
        d = doc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


def _drop(key):
    return lambda doc: doc.pop(key)


TAMPERED = [
    ("version", _set(["version"], "abc")),
    ("tensors", _set(["tensors"], 5)),
    ("tensors", _drop("tensors")),
    ("step", _set(["step"], float("inf"))),
    ("state", _set(["state"], [1, 2])),
    ("state.step", _set(["state", "step"], float("inf"))),
    ("state.model_rng", _set(["state", "model_rng"], [1, 2])),
    ("state.optimizer", _set(["state", "optimizer"], {"optimizer": "Adam"})),
    ("state.optimizer", _set(["state", "optimizer", "state"], 7)),
    ("state.schedule", _set(["state", "schedule"], {"schedule": "Cosine", "t": "x", "base_lrs": [1e-3]})),
    ("state.history", _set(["state", "history"], {"iterations": 3})),
    ("state.loader", _set(["state", "loader"], {"epoch": 1, "batch": "x"})),
    ("state.acc", _set(["state", "acc"], {"loss": 1.0})),
    ("state.callbacks", _set(["state", "callbacks"], "nope")),
    # out-of-range and inconsistent numbers
    ("state.epoch", _set(["state", "epoch"], -3)),
    ("state.epoch", _set(["state", "epoch"], 10 ** 12)),
    ("state.step", _set(["state", "step"], 1e30)),
    ("state.step", _set(["state", "step"], 10 ** 30)),
    ("state.epoch", _set(["state", "epoch"], True)),
    ("lr", _set(["state", "optimizer", "param_groups", 0, "lr"], 1e308 * 10)),
    ("lr", _set(["state", "optimizer", "param_groups", 0, "lr"], -0.1)),
    ("base_lrs", _set(["state", "schedule", "base_lrs"], [float("inf")])),
]


@pytest.mark.parametrize("field,edit", TAMPERED, ids=[f"{i}-{t[0]}" for i, t in enumerate(TAMPERED)])
def test_tampered_checkpoint_is_a_clear_error_and_changes_nothing(tmp_path, data, field, edit):
    name = _tampered(tmp_path, data, edit)
    tr = small_trainer()
    before = weights(tr.model)
    opt_before = json.dumps(ckpt_mod.split_arrays(tr.optimizer.state_dict(), "o", {}))
    lr_before, rng_before = tr.lr, tr.model.rng_state()
    with pytest.raises(ck.train.CheckpointError) as e:
        tr.fit(data["train"], None, epochs=2, batch_size=64, resume=str(tmp_path))
    msg = str(e.value)
    assert name in msg and field in msg, msg
    assert same(before, weights(tr.model))
    assert json.dumps(ckpt_mod.split_arrays(tr.optimizer.state_dict(), "o", {})) == opt_before
    assert tr.lr == lr_before and tr.model.rng_state() == rng_before
    assert tr.step == 0 and tr.epoch == 0 and tr.history.iterations["loss"] == []


def test_lr_of_1e308_is_refused(tmp_path, data):
    name = _tampered(tmp_path, data, _set(["state", "optimizer", "param_groups", 0, "lr"], 1e308))
    with pytest.raises(ck.train.CheckpointError, match=name.replace(".", r"\.") + ".*lr"):
        small_trainer().fit(data["train"], None, epochs=2, batch_size=64, resume=str(tmp_path))


def test_a_failure_in_a_late_component_rolls_everything_back(tmp_path, data):
    # Valid-looking everywhere, but the callback state does not fit the callback: found only when applied.
    name = _tampered(tmp_path, data, _set(["state", "callbacks"], [{"unexpected": 1}]))
    tr = small_trainer(callbacks=[ck.EarlyStopping(monitor="train_loss")])
    before = weights(tr.model)
    with pytest.raises(ck.train.CheckpointError, match=name.replace(".", r"\.") + r".*callbacks"):
        tr.fit(data["train"], None, epochs=2, batch_size=64, resume=str(tmp_path))
    assert same(before, weights(tr.model)) and tr.step == 0 and tr.optimizer.state_dict()["state"][0] == {}


# ---------------------------------------------------------------- stale temporaries and file modes

def test_stale_temporaries_of_a_killed_writer_are_removed_and_only_ours(tmp_path, data):
    import tempfile
    _one_epoch(tmp_path, data)
    ours = [tempfile.mkstemp(prefix=p, suffix=".tmp", dir=tmp_path) for p in
            (".ckpt-00000019-000003.safetensors.", ".ckpt-00000019-000003.json.", ".latest.json.")]
    for fd, _ in ours:
        os.close(fd)
    foreign = [".mine.tmp", ".ckpt-notes.tmp", "ckpt-x.tmp", ".other.json.abcdefgh.tmp", ".latest.json.tmp",
               "notes.txt"]
    for f in foreign:
        (tmp_path / f).write_text("keep")
    small_trainer().fit(data["train"], None, epochs=2, batch_size=64, checkpoint_dir=str(tmp_path),
                        resume=str(tmp_path))
    left = set(os.listdir(tmp_path))
    assert not any(os.path.basename(p) in left for _, p in ours)
    assert set(foreign) <= left
    # a fresh run (no resume) in the folder cleans them too
    fd, p = tempfile.mkstemp(prefix=".ckpt-00000001-000009.json.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    small_trainer().fit(data["train"], None, epochs=1, batch_size=64, checkpoint_dir=str(tmp_path))
    assert not os.path.exists(p) and set(foreign) <= set(os.listdir(tmp_path))


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_mode_a_plain_open_would(tmp_path, data, umask):
    old = os.umask(umask)
    try:
        (tmp_path / "plain").write_text("x")
        plain = os.stat(tmp_path / "plain").st_mode & 0o777
        tr = small_trainer()
        tr.fit(data["train"], None, epochs=1, batch_size=64, checkpoint_dir=str(tmp_path / "ck"),
               run_dir=str(tmp_path / "run"), plots=False)
        tr.model.save(tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert plain == 0o666 & ~umask
    files = [tmp_path / "m.safetensors", tmp_path / "run" / "history.json"]
    files += [tmp_path / "ck" / f for f in os.listdir(tmp_path / "ck")]
    assert len(files) == 5
    for f in files:
        assert os.stat(f).st_mode & 0o777 == plain, f
