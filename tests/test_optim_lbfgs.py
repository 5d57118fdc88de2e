"""ck.optim.LBFGS against torch.optim.LBFGS, its state dict, and its argument checks."""
import numpy as np
import pytest

import cnnkit as ck
from helpers.optim_helpers import _ps

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------- L-BFGS against torch.optim.LBFGS

def _logreg(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((64, 5))
    y = np.sign(X @ rng.standard_normal(5) + 0.3 * rng.standard_normal(64))
    return X, y, 0.1 * rng.standard_normal(5), 0.01, 1e-2


def _mlp(seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 4))
    Y = np.sin(X.sum(1, keepdims=True))
    return X, Y, [0.5 * rng.standard_normal(s) for s in [(4, 8), (8,), (8, 1), (1,)]]


@pytest.mark.parametrize("line_search", ["strong_wolfe", None])
def test_lbfgs_matches_torch_on_l2_logistic_regression(line_search):
    X, y, w0, b0, lam = _logreg()
    w, b = ck.Parameter(w0.copy()), ck.Parameter(np.array([b0]))
    opt = ck.optim.LBFGS([w, b], lr=1 if line_search else 0.5, max_iter=8, history_size=5,
                         line_search_fn=line_search)

    def closure():
        opt.zero_grad()
        z = X @ w.data + b.data[0]
        loss = np.mean(np.log1p(np.exp(-y * z))) + 0.5 * lam * w.data @ w.data
        dz = -y / (1 + np.exp(y * z)) / len(y)
        w.grad += X.T @ dz + lam * w.data
        b.grad += dz.sum()
        return loss

    tw = torch.tensor(w0.copy(), requires_grad=True)
    tb = torch.tensor([b0], dtype=torch.float64, requires_grad=True)
    topt = torch.optim.LBFGS([tw, tb], lr=1 if line_search else 0.5, max_iter=8, history_size=5,
                             line_search_fn=line_search)
    tX, ty = torch.tensor(X), torch.tensor(y)

    def tclosure():
        topt.zero_grad()
        loss = torch.log1p(torch.exp(-ty * (tX @ tw + tb[0]))).mean() + 0.5 * lam * tw @ tw
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
        topt.step(tclosure)
        np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b.data, tb.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert opt.state["func_evals"] == topt.state[tw]["func_evals"]
    assert opt.state["n_iter"] == topt.state[tw]["n_iter"]


def test_lbfgs_matches_torch_on_a_small_network():
    X, Y, init = _mlp()
    ps = [ck.Parameter(a.copy()) for a in init]
    opt = ck.optim.LBFGS(ps, max_iter=15, line_search_fn="strong_wolfe")

    def closure():  # 4-8-1 tanh MLP, mean squared error, numpy backprop
        opt.zero_grad()
        W1, b1, W2, b2 = (p.data for p in ps)
        h = np.tanh(X @ W1 + b1)
        out = h @ W2 + b2
        loss = np.mean((out - Y) ** 2)
        dout = 2 * (out - Y) / out.size
        ps[2].grad += h.T @ dout
        ps[3].grad += dout.sum(0)
        dh = dout @ W2.T * (1 - h ** 2)
        ps[0].grad += X.T @ dh
        ps[1].grad += dh.sum(0)
        return loss

    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = torch.optim.LBFGS(tp, max_iter=15, line_search_fn="strong_wolfe")
    tX, tY = torch.tensor(X), torch.tensor(Y)

    def tclosure():
        topt.zero_grad()
        loss = ((torch.tanh(tX @ tp[0] + tp[1]) @ tp[2] + tp[3] - tY) ** 2).mean()
        loss.backward()
        return loss

    losses = []
    for _ in range(2):
        losses.append(opt.step(closure))
        topt.step(tclosure)
    for p, t in zip(ps, tp):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-7, atol=1e-9)
    assert closure() < 0.5 * losses[0]


def test_lbfgs_state_dict_resumes_bit_for_bit():
    """The history holds lists of arrays and of floats (ro); a resumed run equals the uninterrupted one."""
    X, y, w0, b0, lam = _logreg()

    def make():
        w = ck.Parameter(w0.copy())
        opt = ck.optim.LBFGS([w], max_iter=4, history_size=3, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            z = X @ w.data
            dz = -y / (1 + np.exp(y * z)) / len(y)
            w.grad += X.T @ dz + lam * w.data
            return np.mean(np.log1p(np.exp(-y * z))) + 0.5 * lam * w.data @ w.data
        return w, opt, closure

    w, opt, closure = make()
    opt.step(closure)
    sd = opt.state_dict()
    assert isinstance(sd["state"]["ro"], list) and all(isinstance(r, float) for r in sd["state"]["ro"])
    w2, opt2, closure2 = make()
    w2.data[...] = w.data
    opt2.load_state_dict(sd)
    for _ in range(2):
        opt.step(closure)
        opt2.step(closure2)
    assert w2.data.tobytes() == w.data.tobytes() and opt2.state["n_iter"] == opt.state["n_iter"] > 4


def test_lbfgs_rejects_groups_and_unknown_line_search():
    ps = _ps()
    with pytest.raises(ValueError, match="parameter groups"):
        ck.optim.LBFGS([{"params": ps}, {"params": [ck.Parameter(np.ones(2, np.float32))]}])
    with pytest.raises(ValueError, match="line_search_fn"):
        ck.optim.LBFGS(ps, line_search_fn="armijo")
    with pytest.raises(ValueError, match="invalid lr"):
        ck.optim.LBFGS(ps, lr=-1)


@pytest.mark.parametrize("kw, exc, message", [
    (dict(history_size=0), ValueError, r"LBFGS: history_size must be >= 1, got 0"),
    (dict(max_iter=2.5), TypeError, r"LBFGS: max_iter must be an int, got float"),
    (dict(max_eval=0), ValueError, r"LBFGS: max_eval must be >= 1, got 0"),
    (dict(tolerance_change=-1), ValueError, r"LBFGS: invalid tolerance_change -1.0 \(must be >= 0\)"),
])
def test_lbfgs_bad_arguments_raise(kw, exc, message):
    with pytest.raises(exc, match=message):
        ck.optim.LBFGS(ck.Linear(2, 2).parameters(), **kw)
