# ck.lr_find on real data: a DataLoader shorter than the sweep is cycled (every step is done and the loader
# is left as it was), the loss may be given by name as in the Trainer, a sweep that ended too early gives no
# suggestion but a reason, and the result draws the usual loss-against-log-lr plot.
import numpy as np
import pytest

import cnnkit as ck
from helpers.train_helpers import digits, digits_net, weights


@pytest.fixture(scope="module")
def data():
    return digits()


def test_an_80_step_sweep_over_a_38_batch_loader_does_all_80_steps(data):
    loader = ck.data.DataLoader(data["train"], batch_size=32, shuffle=True, seed=0)
    assert len(loader) == 38
    state = loader.state_dict()
    model = digits_net(0)
    before = weights(model)
    res = ck.lr_find(model, "softmax_cross_entropy", loader, start_lr=1e-5, end_lr=1e-1, num_steps=80,
                     stop_factor=1e6)
    assert len(res.lrs) == len(res.losses) == 80 and res.stopped_because == "reached end_lr"
    np.testing.assert_allclose(res.lrs[-1], 1e-1, rtol=1e-9)
    assert res.suggestion is not None and res.reason is None
    assert 1e-5 < res.suggestion < 1e-1
    assert loader.state_dict() == state          # the loader is left where it was
    assert all(np.array_equal(before[k], v) for k, v in weights(model).items())


def test_the_loss_by_name_equals_the_loss_function(data):
    batches = [data["train"][np.arange(i, i + 32)] for i in range(0, 320, 32)]
    kw = dict(start_lr=1e-4, end_lr=1.0, num_steps=30)
    by_name = ck.lr_find(digits_net(0), "cross_entropy", batches, **kw)
    by_fn = ck.lr_find(digits_net(0), ck.losses.softmax_cross_entropy, batches, **kw)
    assert by_name.losses == by_fn.losses and len(by_name.losses) > 0
    with pytest.raises(ValueError, match=r"lr_find: unknown loss 'hinge'; expected one of \["):
        ck.lr_find(digits_net(0), "hinge", batches)
    with pytest.raises(TypeError, match=r"lr_find: loss must be callable or one of \[.*\], got int"):
        ck.lr_find(digits_net(0), 3, batches)


def test_a_sweep_that_diverges_at_once_gives_no_suggestion_but_a_reason(data):
    loader = ck.data.DataLoader(data["train"], batch_size=32, shuffle=True, seed=0)
    res = ck.lr_find(digits_net(0), "softmax_cross_entropy", loader, start_lr=10.0, end_lr=1e4, num_steps=80)
    assert len(res.lrs) < 10 and ("initial" in res.stopped_because or "not finite" in res.stopped_because)
    assert res.suggestion is None
    assert "diverged" in res.reason and "start_lr" in res.reason
    assert "suggestion=None" in repr(res)


def test_batches_that_run_out_give_no_suggestion(data):
    one_shot = (data["train"][np.arange(i, i + 32)] for i in range(0, 32 * 12, 32))   # a generator: 12 batches
    res = ck.lr_find(digits_net(0), "softmax_cross_entropy", one_shot, start_lr=1e-5, end_lr=1e-1, num_steps=40)
    assert len(res.lrs) == 12 and "ran out of batches after 12 of 40 steps" in res.stopped_because
    assert res.suggestion is None and "ran out" in res.reason


def test_too_few_points_give_no_suggestion(data):
    batches = [data["train"][np.arange(32)]]
    res = ck.lr_find(digits_net(0), "softmax_cross_entropy", batches, start_lr=1e-5, end_lr=1e-1, num_steps=4)
    assert len(res.lrs) == 4 and res.stopped_because == "reached end_lr"
    assert res.suggestion is None and "4 points" in res.reason


def test_plot_draws_loss_against_log_lr_with_the_suggestion_marked(data, tmp_path):
    loader = ck.data.DataLoader(data["train"], batch_size=32, shuffle=True, seed=0)
    res = ck.lr_find(digits_net(0), "softmax_cross_entropy", loader, start_lr=1e-5, end_lr=1.0, num_steps=60)
    assert res.suggestion is not None
    path = tmp_path / "lr_find.png"
    fig = res.plot(path)
    data_png = path.read_bytes()
    assert data_png[:8] == b"\x89PNG\r\n\x1a\n" and len(data_png) > 1000
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "learning rate" in ax.get_xlabel() and "loss" in ax.get_ylabel()
    marks = [l for l in ax.get_lines() if len(l.get_xdata()) == 1 and l.get_marker() not in ("None", "", None)]
    assert len(marks) == 1 and marks[0].get_xdata()[0] == res.suggestion
    i = res.lrs.index(res.suggestion)
    assert marks[0].get_ydata()[0] == res.smoothed[i]
    curves = [l for l in ax.get_lines() if len(l.get_xdata()) == len(res.lrs)]
    assert any(list(l.get_ydata()) == res.losses for l in curves)
    # without a path nothing is written; a result without a suggestion plots without a marker
    fig2 = ck.lr_find(digits_net(0), "softmax_cross_entropy", [data["train"][np.arange(32)]], num_steps=4).plot()
    assert not [l for l in fig2.axes[0].get_lines() if len(l.get_xdata()) == 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr_find.png"]
