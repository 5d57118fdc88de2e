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
