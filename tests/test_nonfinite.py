# nonfinite="skip" in the Trainer: a step whose loss or gradient is not finite (one NaN pixel in the data)
# changes nothing, is counted (History, per epoch, the progress log) and training goes on; only the
# quit-early rule ends a run, with a message naming quit_factor and what it saw; a run stopped inside an
# epoch returns a History holding what was logged so far.
import math

import numpy as np
import pytest

import cnnkit as ck
from helpers.train_helpers import accuracy, digits, digits_net, weights

POISONED = 123   # the training sample that gets one NaN pixel


@pytest.fixture(scope="module")
def data():
    return digits()


def _poisoned(ds):
    x = ds.x.copy()
    x[POISONED, 0, 3, 4] = np.nan
    return ck.data.ArrayDataset(x, ds.y.copy())


def _batches_with_nan(ds, epochs, batch_size, seed):
    loader = ck.data.DataLoader(ds, batch_size=batch_size, shuffle=True, seed=seed, prefetch=False)
    n = 0
    for e in range(epochs):
        loader.set_epoch(e)
        n += sum(bool(np.isnan(x).any()) for x, _ in loader)
    return n


class Watch(ck.train.Callback):
    """Weights and optimizer state after every step; on a step with a non-finite loss, checks that neither
    changed since the step before."""

    def __init__(self):
        self.prev, self.nan_steps, self.checked = None, [], 0

    def on_fit_start(self, trainer):
        self.prev = (weights(trainer.model), _opt_state(trainer.optimizer))

    def on_step_end(self, trainer, step, loss):
        now = (weights(trainer.model), _opt_state(trainer.optimizer))
        if not math.isfinite(loss):
            self.nan_steps.append(step)
            w0, s0 = self.prev
            assert all(np.array_equal(w0[k], now[0][k]) for k in w0)
            assert s0 == now[1]
            self.checked += 1
        self.prev = now


def _opt_state(opt):
    sd = opt.state_dict()
    return repr([{k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                 for s in sd["state"]])


def test_one_nan_pixel_with_skip_trains_every_epoch_and_counts_the_skipped_steps(data, capsys):
    train = _poisoned(data["train"])
    epochs, bs, seed = 3, 32, 0
    expected = _batches_with_nan(train, epochs, bs, seed)
    assert expected == epochs   # the sample is in one batch per epoch
    model = digits_net(0)
    opt = ck.optim.Adam(model.parameters(), lr=2e-3)
    watch = Watch()
    tr = ck.Trainer(model, opt, nonfinite="skip", callbacks=[watch], ratio_every=1)
    hist = tr.fit(train, data["val"], epochs=epochs, batch_size=bs, seed=seed)
    assert hist.stop_reason is None
    assert len(hist.epochs) == epochs and not any(e.get("partial") for e in hist.epochs)
    assert hist.skipped_steps == expected   # the trainer skipped them: the NaN loss never reached the optimizer
    assert [e["skipped_steps"] for e in hist.epochs] == [1, 1, 1]
    assert len(watch.nan_steps) == expected and watch.checked == expected
    assert sum(not math.isfinite(v) for v in hist.iterations["loss"]) == expected
    # the epoch means leave the skipped step out: finite
    assert all(math.isfinite(e["train_loss"]) for e in hist.epochs)
    # no update/weight ratio is logged for a step that changed nothing (ratios count steps from 0)
    logged = {r["step"] + 1 for r in hist.ratios}
    assert not logged & set(watch.nan_steps) and len(logged) == len(hist.iterations["step"]) - expected
    for n, p in model.named_parameters():
        assert np.isfinite(p.data).all(), n
    assert accuracy(model, data["val"]) > 0.9
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.startswith("epoch ")]
    assert len(lines) == epochs and all("skipped 1 non-finite step" in l for l in lines), out


def test_a_nan_loss_with_finite_gradients_is_skipped_by_the_trainer(data):
    # The optimizer only sees gradients; a loss that is NaN while its gradient is finite is not trained on.
    model = digits_net(0)
    opt = ck.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def nan_value(scores, y):
        loss, d = ck.losses.softmax_cross_entropy(scores, y)
        nan_value.calls += 1
        return (float("nan") if nan_value.calls in (1, 4) else loss), d
    nan_value.calls = 0
    watch = Watch()
    tr = ck.Trainer(model, opt, nan_value, progress=False, callbacks=[watch])
    hist = tr.fit(data["train"], None, epochs=1, batch_size=64)
    assert watch.nan_steps == [1, 4] and watch.checked == 2
    assert hist.skipped_steps == 2 and hist.epochs[0]["skipped_steps"] == 2 and hist.stop_reason is None
    assert math.isfinite(hist.epochs[0]["train_loss"])
    # with nothing trained on step 1, the quit-early rule measures from the first finite loss
    assert tr._initial_loss() == hist.iterations["loss"][1]


def test_a_nan_loss_with_nonfinite_raise_raises_and_changes_nothing(data):
    model = digits_net(0)
    opt = ck.optim.SGD(model.parameters(), lr=0.05)

    def nan_value(scores, y):
        loss, d = ck.losses.softmax_cross_entropy(scores, y)
        return float("nan"), d
    tr = ck.Trainer(model, opt, nan_value, progress=False, nonfinite="raise")
    before = weights(model)
    with pytest.raises(FloatingPointError, match=r"Trainer: the loss is nan at iteration 1 \(nonfinite='raise'\)"):
        tr.fit(data["train"], None, epochs=1)
    assert all(np.array_equal(before[k], v) for k, v in weights(model).items())


def test_the_quit_early_rule_names_quit_factor_the_loss_and_the_threshold(data, capsys):
    model = digits_net(0)
    opt = ck.optim.Adam(model.parameters(), lr=5.0)
    tr = ck.Trainer(model, opt, quit_factor=3.0, progress=False)
    hist = tr.fit(data["train"], None, epochs=3, batch_size=32)
    reason = hist.stop_reason
    losses = hist.iterations["loss"]
    first = next(v for v in losses if math.isfinite(v))
    last = losses[-1]
    assert last > 3.0 * first
    assert all(not (v > 3.0 * first) for v in losses[:-1])
    assert reason.startswith("quit_factor=3: ")
    assert f"the loss {last:.4g} at iteration {len(losses)}" in reason
    assert f"3 x the initial loss {first:.4g} = {3.0 * first:.4g}" in reason
    assert "quit-early" in reason and "quit_factor=None" in reason
    assert reason in capsys.readouterr().err
    # stopped inside the first epoch: the History holds what was logged, a partial epoch included
    assert len(losses) < 38
    assert len(hist.epochs) == 1 and hist.epochs[0]["partial"] is True
    assert hist.epochs[0]["steps"] == len(losses) and math.isfinite(hist.epochs[0]["train_loss"])
    assert hist.history["train_loss"] == [hist.epochs[0]["train_loss"]]


def test_every_step_skipped_for_an_epoch_ends_the_run_by_the_quit_rule(data):
    model = digits_net(0)
    opt = ck.optim.SGD(model.parameters(), lr=0.05)

    def always_nan(scores, y):
        loss, d = ck.losses.softmax_cross_entropy(scores, y)
        return loss, np.full_like(d, np.nan)
    tr = ck.Trainer(model, opt, always_nan, progress=False, quit_factor=3.0)
    before = weights(model)
    hist = tr.fit(data["train"], None, epochs=5, batch_size=64)
    steps = len(ck.data.DataLoader(data["train"], batch_size=64))
    assert hist.stop_reason.startswith("quit_factor=3: ") and f"{steps} steps in a row" in hist.stop_reason
    assert hist.skipped_steps == steps and len(hist.iterations["step"]) == steps
    assert all(np.array_equal(before[k], v) for k, v in weights(model).items())
    # with the rule off, the run goes on (every step counted as skipped)
    tr = ck.Trainer(model, opt, always_nan, progress=False, quit_factor=None)
    hist = tr.fit(data["train"], None, epochs=2, batch_size=64)
    assert hist.stop_reason is None and hist.skipped_steps == 2 * steps and len(hist.epochs) == 2


def test_a_keyboard_interrupt_inside_the_first_epoch_returns_what_was_logged(data, capsys):
    class Interrupt(ck.train.Callback):
        def on_step_end(self, trainer, step, loss):
            if step == 5:
                raise KeyboardInterrupt

    model = digits_net(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=1e-3), progress=False, callbacks=[Interrupt()])
    hist = tr.fit(data["train"], data["val"], epochs=3, batch_size=32)
    assert hist.iterations["step"] == [1, 2, 3, 4, 5]
    assert "KeyboardInterrupt" in hist.stop_reason and "iteration 5" in hist.stop_reason
    assert len(hist.epochs) == 1 and hist.epochs[0]["partial"] is True and hist.epochs[0]["steps"] == 5
    assert hist.epochs[0]["train_loss"] == pytest.approx(np.mean(hist.iterations["loss"]))
    assert "KeyboardInterrupt" in capsys.readouterr().err


def test_a_callback_stopping_inside_the_first_epoch_keeps_the_partial_epoch(data):
    class StopAt(ck.train.Callback):
        def on_step_end(self, trainer, step, loss):
            if step == 7:
                trainer.stop_training = True

    model = digits_net(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=1e-3), progress=False, callbacks=[StopAt()])
    hist = tr.fit(data["train"], data["val"], epochs=3, batch_size=32)
    assert len(hist.iterations["step"]) == 7
    assert len(hist.epochs) == 1 and hist.epochs[0]["steps"] == 7 and hist.epochs[0]["partial"] is True
    assert "val_acc" in hist.epochs[0]


def test_history_state_keeps_the_skip_count(tmp_path):
    h = ck.train.History()
    h.skipped_steps = 4
    h.to_json(tmp_path / "h.json")
    assert ck.train.History.from_json(tmp_path / "h.json").skipped_steps == 4
    old = h.state_dict()
    del old["skipped_steps"]   # a history written before the count existed
    assert ck.train.History().load_state_dict(old).skipped_steps == 0


def test_skips_on_the_device_are_counted_per_epoch(data, monkeypatch):
    # On a GPU the loss stays on the device and the optimizer's gradient check skips the step; the
    # trainer reads the optimizer's skip counter once an epoch (the strict CuPy stand-in of fakecupy.py).
    from helpers import fakecupy
    fakecupy.install(monkeypatch)
    idx = np.arange(256)
    x, y = data["train"][idx]
    x = x.copy()
    x[POISONED, 0, 3, 4] = np.nan
    train = ck.data.ArrayDataset(x, y)
    expected = _batches_with_nan(train, 2, 32, 0)
    model = digits_net(0)
    model.to("cuda")
    opt = ck.optim.Adam(model.parameters(), lr=2e-3)
    tr = ck.Trainer(model, opt, progress=False, log_every=3)
    hist = tr.fit(train, None, epochs=2, batch_size=32)
    assert hist.stop_reason is None and len(hist.epochs) == 2
    assert [e["skipped_steps"] for e in hist.epochs] == [1, 1] and hist.skipped_steps == expected == 2
    assert opt.skipped_steps == 2
    assert all(math.isfinite(e["train_loss"]) for e in hist.epochs)
    for n, p in model.named_parameters():
        assert np.isfinite(p.data.get()).all(), n
