# The quit-early rule's defaults: off in a Trainer (a loss spike past 3x the initial loss does not end the run),
# on (quit_factor=3) in ck.search's trials, and its message names quit_factor and how to turn it off.
import math

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import search
from cnnkit.config import load_config
from helpers.train_helpers import digits, digits_net


@pytest.fixture(scope="module")
def data():
    return digits()


def spiking_loss(at_call, factor=10.0):
    """softmax cross-entropy whose reported value is `factor` times larger at one call (its gradient unchanged):
    a spike past 3x the initial loss that training itself never sees."""
    calls = [0]

    def loss(scores, y):
        value, dscores = ck.losses.softmax_cross_entropy(scores, y)
        calls[0] += 1
        return (value * factor if calls[0] == at_call else value), dscores
    return loss


def test_a_trainer_by_default_does_not_stop_on_a_loss_spike(data):
    model = digits_net(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3), spiking_loss(3), progress=False)
    assert tr.quit_factor is None
    hist = tr.fit(data["train"], None, epochs=2, batch_size=64)
    steps = 2 * len(ck.data.DataLoader(data["train"], batch_size=64))
    losses = hist.iterations["loss"]
    assert losses[2] > 3 * losses[0]          # the spike would have tripped the 3x rule
    assert hist.stop_reason is None and len(losses) == steps and len(hist.epochs) == 2
    assert not any(e.get("partial") for e in hist.epochs)


def test_quit_factor_3_stops_the_same_run_at_the_spike_and_the_message_names_it(data, capsys):
    model = digits_net(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3), spiking_loss(3), progress=False,
                    quit_factor=3.0)
    hist = tr.fit(data["train"], None, epochs=2, batch_size=64)
    losses = hist.iterations["loss"]
    assert len(losses) == 3
    reason = hist.stop_reason
    assert reason.startswith("quit_factor=3: ") and "at iteration 3" in reason
    assert f"initial loss {losses[0]:.4g}" in reason and "quit_factor=None disables it" in reason
    assert reason in capsys.readouterr().err


def test_search_trials_still_quit_early(tmp_path):
    assert search.TRIAL_QUIT_FACTOR == 3.0
    base = load_config(None)
    base["out"] = str(tmp_path)
    params = {"optimizer.lr": 5.0}      # Adam at lr 5 explodes on digits within the first epoch
    out = search.config_objective(base, params, 1)
    assert out["stopped"] and out["stopped"].startswith("quit_factor=3: ")
    # the same configuration trained outside a search (the Trainer's default) runs its epoch to the end
    from cnnkit.run import run_training
    cfg = load_config(None)
    cfg.update(out=str(tmp_path / "plain"), epochs=1, plots=False)
    cfg["optimizer"]["lr"] = 5.0
    trainer, result = run_training(cfg, log=lambda *a: None, progress=False)
    assert result["stop_reason"] is None and len(trainer.history.epochs) == 1
    assert not trainer.history.epochs[0].get("partial")
    losses = np.array(trainer.history.iterations["loss"])
    assert np.nanmax(losses) > 3 * losses[0] or not all(math.isfinite(v) for v in losses)
