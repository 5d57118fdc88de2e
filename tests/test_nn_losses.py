# ck.nn: the loss classes against torch.nn's in float64 (value and input gradient, every reduction and option),
# their relation to cnnkit.losses (CS231n's SVM, softmax cross-entropy), use as a Trainer loss, the layer
# names, and the argument errors.
import numpy as np
import pytest

import cnnkit as ck
import cnnkit.functional as F

N, C = 6, 4
RNG = np.random.default_rng(0)
S = RNG.standard_normal((N, C)) * 2
Y = np.array([0, 3, 1, 1, 2, 3])
W = np.array([0.5, 2.0, 1.0, 0.25])
R = RNG.standard_normal((N, C))               # a regression target
B = (RNG.random((N, C)) > 0.5).astype(np.float64)   # binary targets

# (id, ours, torch's loss as a string in `nn` (torch.nn) and `torch`, target)
CASES = []
for red in ("mean", "sum", "none"):
    CASES += [
        (f"ce_{red}", lambda red=red: ck.nn.CrossEntropyLoss(reduction=red),
         f"nn.CrossEntropyLoss(reduction='{red}')", Y),
        (f"ce_weight_ignore_smooth_{red}", lambda red=red: ck.nn.CrossEntropyLoss(
            weight=W, ignore_index=1, reduction=red, label_smoothing=0.2),
         f"nn.CrossEntropyLoss(weight=torch.tensor(W), ignore_index=1, reduction='{red}', label_smoothing=0.2)", Y),
        (f"nll_weight_ignore_{red}", lambda red=red: ck.nn.NLLLoss(weight=W, ignore_index=3, reduction=red),
         f"nn.NLLLoss(weight=torch.tensor(W), ignore_index=3, reduction='{red}')", Y),
        (f"mse_{red}", lambda red=red: ck.nn.MSELoss(reduction=red), f"nn.MSELoss(reduction='{red}')", R),
        (f"l1_{red}", lambda red=red: ck.nn.L1Loss(reduction=red), f"nn.L1Loss(reduction='{red}')", R),
        (f"smoothl1_{red}", lambda red=red: ck.nn.SmoothL1Loss(reduction=red, beta=0.7),
         f"nn.SmoothL1Loss(reduction='{red}', beta=0.7)", R),
        (f"bce_{red}", lambda red=red: ck.nn.BCEWithLogitsLoss(reduction=red), f"nn.BCEWithLogitsLoss(reduction='{red}')",
         B),
        (f"bce_weights_{red}", lambda red=red: ck.nn.BCEWithLogitsLoss(weight=W, reduction=red, pos_weight=W[::-1]),
         f"nn.BCEWithLogitsLoss(weight=torch.tensor(W), reduction='{red}', pos_weight=torch.tensor(W[::-1].copy()))",
         B),
        (f"margin_{red}", lambda red=red: ck.nn.MultiMarginLoss(reduction=red), f"nn.MultiMarginLoss(reduction='{red}')",
         Y),
        (f"margin_p2_weight_{red}", lambda red=red: ck.nn.MultiMarginLoss(p=2, margin=0.5, weight=W, reduction=red),
         f"nn.MultiMarginLoss(p=2, margin=0.5, weight=torch.tensor(W), reduction='{red}')", Y),
    ]
CASES += [("ce_all_smoothing", lambda: ck.nn.CrossEntropyLoss(label_smoothing=1.0),
           "nn.CrossEntropyLoss(label_smoothing=1.0)", Y),
          ("smoothl1_beta0", lambda: ck.nn.SmoothL1Loss(beta=0.0), "nn.SmoothL1Loss(beta=0.0)", R)]


@pytest.mark.parametrize("name,ours,theirs,target", CASES, ids=[c[0] for c in CASES])
def test_equals_torch_in_float64_value_and_gradient(name, ours, theirs, target):
    torch = pytest.importorskip("torch")
    scores = F.log_softmax(S, dim=1).data if name.startswith("nll") else S
    x = ck.Tensor(scores, requires_grad=True)
    xt = torch.tensor(scores, requires_grad=True)
    tt = torch.tensor(target)
    loss = ours()(x, target)
    lt = eval(theirs, {"nn": torch.nn, "torch": torch, "W": W})(xt, tt)
    assert isinstance(loss, ck.Tensor) and loss.shape == tuple(lt.shape)
    np.testing.assert_allclose(loss.data, lt.detach().numpy(), rtol=1e-12, atol=1e-14)
    g = np.random.default_rng(1).standard_normal(loss.shape)
    if loss.size == 1:
        assert isinstance(loss.item(), float)
        loss.backward()
        lt.backward()
    else:
        loss.backward(g)
        lt.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name,ours,theirs,target", [c for c in CASES if c[0].endswith("mean")],
                         ids=[c[0] for c in CASES if c[0].endswith("mean")])
def test_gradcheck_through_a_module(name, ours, theirs, target):
    crit = ours()

    class Head(ck.Module):
        def __init__(self):
            super().__init__()
            self.fc = ck.Linear(C, C, dtype=np.float64, seed=0)

        def forward(self, x):
            out = self.fc(x)
            return F.log_softmax(out, dim=1) if name.startswith("nll") else out

    def loss(out, y):
        return crit._trainer_loss(out, y)

    assert ck.gradcheck(Head(), S, y=target, loss=loss).ok


def test_relation_to_cnnkit_losses_and_cs231n_svm():
    # CS231n's SVM is MultiMarginLoss's per-sample sum over classes, not divided by C
    svm, dsvm = ck.losses.svm_loss(S, Y)
    np.testing.assert_allclose(C * ck.nn.MultiMarginLoss()(S, Y).item(), svm, rtol=1e-14)
    np.testing.assert_allclose(ck.nn.MultiMarginLoss(reduction="sum")(S, Y).item(), svm * N / C, rtol=1e-14)
    v, d = ck.nn.MultiMarginLoss()._trainer_loss(S, Y)
    np.testing.assert_allclose(C * d, dsvm, rtol=1e-13)
    ce, dce = ck.losses.softmax_cross_entropy(S, Y, label_smoothing=0.1)
    v, d = ck.nn.CrossEntropyLoss(label_smoothing=0.1)._trainer_loss(S, Y)
    np.testing.assert_allclose(v, ce, rtol=1e-14)
    np.testing.assert_allclose(d, dce, rtol=1e-12, atol=1e-15)


def test_a_loss_object_is_a_trainer_loss():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 5)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    losses = []
    for loss in ("softmax_cross_entropy", ck.nn.CrossEntropyLoss()):
        model = ck.Sequential(ck.Linear(5, 3, seed=0))
        tr = ck.Trainer(model, ck.optim.SGD(model.parameters(), lr=0.1), loss=loss, progress=False)
        losses.append(tr.fit((x, y), epochs=2, batch_size=8, plots=False).iterations["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    with pytest.raises(ValueError, match="must reduce to one value.*got 'none'"):
        ck.nn.MSELoss(reduction="none")._trainer_loss(x, x)


def test_layer_classes_under_nn_and_the_issue_example_trains():
    assert ck.nn.Conv2d is ck.Conv2d and ck.nn.BatchNorm2d is ck.BatchNorm2d and ck.nn.Module is ck.Module
    assert ck.nn.Linear is ck.Linear and ck.nn.Sequential is ck.Sequential and ck.nn.ModuleList is ck.ModuleList

    class Net(ck.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = ck.nn.Linear(5, 16, seed=0), ck.nn.Linear(16, 3, seed=1)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 5)).astype(np.float32), rng.integers(0, 3, 64)
    net = Net()
    opt = ck.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    criterion = ck.nn.CrossEntropyLoss()
    first = None
    for _ in range(30):
        loss = criterion(net(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


def test_argument_errors():
    with pytest.raises(ValueError, match="reduction must be one of"):
        ck.nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: target class indices must be in \[0, 4\)"):
        ck.nn.CrossEntropyLoss()(S, np.array([0, 1, 2, 3, 4, 0]))
    with pytest.raises(TypeError, match="CrossEntropyLoss: target must hold integer class indices"):
        ck.nn.CrossEntropyLoss()(S, S)
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: input must be 2-D"):
        ck.nn.CrossEntropyLoss()(S[0], Y)
    with pytest.raises(ValueError, match=r"weight must be a 1-D array with one value per class \(4\)"):
        ck.nn.CrossEntropyLoss(weight=np.ones(3))(S, Y)
    with pytest.raises(ValueError, match=r"MSELoss: target must have the input's shape"):
        ck.nn.MSELoss()(S, S[:2])
    with pytest.raises(TypeError, match="MSELoss: input must be float32 or float64"):
        ck.nn.MSELoss()(Y, Y)
    with pytest.raises(ValueError, match="MultiMarginLoss: p must be 1 or 2"):
        ck.nn.MultiMarginLoss(p=3)
    with pytest.raises(TypeError, match="target must be an array"):
        ck.nn.L1Loss()(S, "y")


def test_loss_classes_are_in_ck_losses_too():
    for n in ("CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "BCEWithLogitsLoss",
              "MultiMarginLoss"):
        assert getattr(ck.losses, n) is getattr(ck.nn, n) and n in ck.losses.__all__
