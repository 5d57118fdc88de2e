# torch's spellings: ck.optim.Adagrad / RMSprop, the ck.schedules names of torch.optim.lr_scheduler (driven side
# by side with torch's, same arguments), LinearLR, LambdaLR and SequentialLR, and ck.data's TensorDataset,
# Subset and random_split.
import json

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import schedules as S


def test_optimizer_aliases():
    assert ck.optim.Adagrad is ck.optim.AdaGrad and ck.optim.RMSprop is ck.optim.RMSProp


# (name, kwargs) run through ck.schedules.<name> and torch.optim.lr_scheduler.<name>
SCHEDULES = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 9], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("PolynomialLR", dict(total_iters=8, power=2.0)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)),
    ("CosineAnnealingWarmRestarts", dict(T_0=4, T_mult=2, eta_min=0.001)),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=3, cycle_momentum=False)),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=30)),
    ("LinearLR", dict(start_factor=0.25, end_factor=0.75, total_iters=6)),
    ("LinearLR", dict()),
]


@pytest.mark.parametrize("name,kw", SCHEDULES, ids=[f"{n}{i}" for i, (n, _) in enumerate(SCHEDULES)])
def test_schedule_names_equal_torch(name, kw):
    torch = pytest.importorskip("torch")
    opt = ck.optim.SGD([ck.Parameter(np.zeros(2))], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
    sched = getattr(S, name)(opt, **kw)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    for t in range(30):
        assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), t
        assert opt.param_groups[0]["momentum"] == pytest.approx(topt.param_groups[0]["momentum"], rel=1e-12)
        topt.step()
        sched.step()
        tsched.step()


def test_reduce_lr_on_plateau_and_lambda_and_sequential_equal_torch():
    torch = pytest.importorskip("torch")
    assert S.ReduceLROnPlateau is S.ReduceOnPlateau
    tl = torch.optim.lr_scheduler

    def pair():
        return (ck.optim.SGD([ck.Parameter(np.zeros(2))], lr=0.2),
                torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.2))

    opt, topt = pair()
    lam = S.LambdaLR(opt, lr_lambda=lambda t: 0.9 ** t + 0.01 * t)
    tlam = tl.LambdaLR(topt, lr_lambda=lambda t: 0.9 ** t + 0.01 * t)
    o2, t2 = pair()
    seq = S.SequentialLR(o2, [S.LinearLR(o2, start_factor=0.1, total_iters=4), S.CosineAnnealingLR(o2, T_max=10),
                              S.ExponentialLR(o2, gamma=0.8)], milestones=[4, 14])
    tseq = tl.SequentialLR(t2, [tl.LinearLR(t2, start_factor=0.1, total_iters=4), tl.CosineAnnealingLR(t2, T_max=10),
                                tl.ExponentialLR(t2, gamma=0.8)], milestones=[4, 14])
    for t in range(25):
        assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12), t
        assert o2.param_groups[0]["lr"] == pytest.approx(t2.param_groups[0]["lr"], rel=1e-10), t
        for o in (topt, t2):
            o.step()
        for s in (lam, seq, tlam, tseq):
            s.step()


def test_sequential_state_dict_round_trips_through_json():
    opt = ck.optim.SGD([ck.Parameter(np.zeros(2))], lr=0.2)
    seq = S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=4), S.StepLR(opt, step_size=2)],
                         milestones=[4])
    for _ in range(7):
        seq.step()
    sd = json.loads(json.dumps(seq.state_dict()))
    opt2 = ck.optim.SGD([ck.Parameter(np.zeros(2))], lr=0.2)
    seq2 = S.SequentialLR(opt2, [S.LinearLR(opt2, start_factor=0.1, total_iters=4), S.StepLR(opt2, step_size=2)],
                          milestones=[4])
    seq2.load_state_dict(sd)
    assert seq2.t == 7 and [seq2.step() for _ in range(5)] == [seq.step() for _ in range(5)]
    with pytest.raises(ValueError, match="expected 1 milestone"):
        S.SequentialLR(opt, [S.StepLR(opt), S.StepLR(opt)], milestones=[2, 3])
    with pytest.raises(TypeError, match="lr_lambda must be a function"):
        S.LambdaLR(opt, lr_lambda=0.5)


def test_tensor_dataset_subset_random_split():
    x = np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2)
    y = np.arange(10)
    ds = ck.data.TensorDataset(x, y)
    assert len(ds) == 10
    xb, yb = ds[np.array([3, 1])]
    np.testing.assert_array_equal(yb, [3, 1])
    np.testing.assert_array_equal(xb, x[[3, 1]])
    parts = ck.data.random_split(ds, [0.7, 0.3], seed=1)
    assert [len(p) for p in parts] == [7, 3]
    got = np.concatenate([p[np.arange(len(p))][1] for p in parts])
    assert sorted(got.tolist()) == list(range(10))            # disjoint and complete
    again = ck.data.random_split(ds, [7, 3], seed=1)
    np.testing.assert_array_equal(again[0].indices, parts[0].indices)
    assert [len(p) for p in ck.data.random_split(ds, [0.5, 0.25, 0.25])] == [6, 2, 2]   # remainder from the first
    sub = ck.data.Subset(ds, [9, 0])
    assert sub[0][1] == 9 and len(sub) == 2
    # a DataLoader (and so the Trainer) takes them
    loader = ck.data.DataLoader(parts[0], batch_size=4)
    assert sum(len(b[1]) for b in loader) == 7
    with pytest.raises(ValueError, match="lengths must sum to the dataset's length 10"):
        ck.data.random_split(ds, [5, 4])
    with pytest.raises(ValueError, match="every array must have the first one's length 10"):
        ck.data.TensorDataset(x, y[:3])
    with pytest.raises(ValueError, match=r"indices must be in \[-10, 10\)"):
        ck.data.Subset(ds, [10])
