# trainer.sanity_check: passes on a correct model, and each broken setup fails with the message that
# points at its cause (a summed loss, weights initialised far too large, a wrong backward pass).
import numpy as np
import pytest

import cnnkit as ck
from helpers.train_helpers import digits, digits_net


@pytest.fixture(scope="module")
def train():
    return digits()["train"]


def test_sanity_check_passes_on_a_correct_model(train, capsys):
    model = digits_net(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3))
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    rep = tr.sanity_check(train)
    assert rep.passed, str(rep)
    assert [name for name, _, _ in rep.checks] == ["initial loss ~ ln(C)", "loss rises with regularisation",
                                                   "overfits 20 samples", "gradient check"]
    assert "all checks passed" in capsys.readouterr().out
    assert all(np.array_equal(before[n], p.data) for n, p in model.named_parameters())  # untouched


def test_sanity_check_catches_a_summed_loss(train):
    def summed(scores, y):
        loss, d = ck.losses.softmax_cross_entropy(scores, y)
        return loss * len(y), d * len(y)
    model = digits_net(0)
    rep = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3), summed).sanity_check(train, verbose=False)
    assert not rep.passed
    (name, detail), = [f for f in rep.failed() if f[0] == "initial loss ~ ln(C)"]
    assert "summed over the batch instead of averaged" in detail


def test_sanity_check_catches_huge_initial_weights(train):
    model = digits_net(0)
    for p in model.parameters():
        p.data *= 30
    rep = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3)).sanity_check(train, verbose=False)
    failed = dict(rep.failed())
    assert "initial loss ~ ln(C)" in failed and "initial weights may be too large" in failed["initial loss ~ ln(C)"]


class BrokenReLU(ck.ReLU):
    """Passes the gradient everywhere: a classic hand-written backward bug."""

    def backward(self, dy, need_dx=True):
        super().backward(dy, need_dx)
        return dy.copy()


def test_sanity_check_catches_a_wrong_backward(train):
    ck.manual_seed(0)
    model = ck.Sequential(ck.Flatten(), ck.Linear(64, 32), BrokenReLU(), ck.Linear(32, 10))
    rep = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=2e-3)).sanity_check(train, verbose=False)
    failed = dict(rep.failed())
    assert "gradient check" in failed and "failing:" in failed["gradient check"]
