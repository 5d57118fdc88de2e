# The Trainer refuses bad constructor and fit arguments up front, with an error naming the argument, what
# was expected and what it got, instead of training nothing (an optimizer over another model's parameters)
# or failing deep inside a step.
import numpy as np
import pytest

import cnnkit as ck
from helpers.train_helpers import digits


def _model(seed=0):
    return ck.Sequential(ck.Flatten(), ck.Linear(64, 10, seed=seed))


def test_an_optimizer_over_another_models_parameters_is_refused():
    model, other = _model(0), _model(1)
    opt = ck.optim.SGD(other.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"Trainer: optimizer's parameters must be the model's parameters "
                                         r"\(the same Parameter objects\); 2 of its 2 parameters are not in the "
                                         r"model"):
        ck.Trainer(model, opt)
    # one foreign parameter among the model's is counted too
    extra = _model(2)
    mixed = ck.optim.SGD(list(model.parameters()) + [next(iter(extra.parameters()))], lr=0.1)
    with pytest.raises(ValueError, match=r"1 of its 3 parameters are not in the model"):
        ck.Trainer(model, mixed)


def test_an_optimizer_over_part_of_the_model_is_fine():
    model = ck.Sequential(ck.Flatten(), ck.Linear(64, 32, seed=0), ck.ReLU(), ck.Linear(32, 10, seed=1))
    head = list(model.parameters())[2:]
    tr = ck.Trainer(model, ck.optim.SGD(head, lr=0.1), progress=False)
    w0 = [p.data.copy() for p in model.parameters()]
    tr.fit(digits()["train"], epochs=1, batch_size=64, plots=False)
    w1 = [p.data for p in model.parameters()]
    assert np.array_equal(w0[0], w1[0]) and not np.array_equal(w0[2], w1[2])


@pytest.mark.parametrize("kw, exc, message", [
    (dict(model=None), TypeError, r"Trainer: model must be a cnnkit model \(a ck\.Layer: ck\.Sequential, "
                                  r"ck\.Graph\.\.\.\), got NoneType"),
    (dict(model="net"), TypeError, r"Trainer: model must be a cnnkit model .*got str"),
    (dict(optimizer=None), TypeError, r"Trainer: optimizer must be a ck\.optim optimizer \(SGD, Adam\.\.\.\) "
                                      r"over the model's parameters, got NoneType"),
    (dict(optimizer=0.1), TypeError, r"Trainer: optimizer must be a ck\.optim optimizer .*got float"),
    (dict(optimizer="lbfgs"), TypeError, r"Trainer: optimizer .*LBFGS"),
    (dict(schedule=5), TypeError, r"Trainer: schedule must be a ck\.schedules schedule or None, got int"),
    (dict(schedule="cosine"), TypeError, r"Trainer: schedule must be a ck\.schedules schedule or None, got str"),
    (dict(schedule="other"), ValueError, r"Trainer: schedule drives another optimizer"),
    (dict(log_every=-1), ValueError, r"Trainer: log_every must be >= 1, got -1"),
    (dict(log_every=0), ValueError, r"Trainer: log_every must be >= 1, got 0"),
    (dict(log_every=2.5), TypeError, r"Trainer: log_every must be an int, got float"),
    (dict(ratio_every=-5), ValueError, r"Trainer: ratio_every must be >= 0, got -5"),
    (dict(ratio_every="50"), TypeError, r"Trainer: ratio_every must be an int, got str"),
    (dict(progress="no"), TypeError, r"Trainer: progress must be a bool, got str"),
    (dict(progress=1), TypeError, r"Trainer: progress must be a bool, got int"),
    (dict(quit_factor="3"), TypeError, r"Trainer: quit_factor must be a number, got str"),
    (dict(quit_factor=True), TypeError, r"Trainer: quit_factor must be a number, got bool"),
    (dict(quit_factor=float("nan")), ValueError, r"Trainer: quit_factor must be finite, got nan"),
    (dict(quit_factor=1.0), ValueError, r"Trainer: quit_factor must be > 1 or None, got 1.0"),
    (dict(loss=3), TypeError, r"Trainer: loss must be callable or one of \['cross_entropy', 'mse', "
                              r"'softmax_cross_entropy', 'svm', 'svm_loss'\], got int"),
    (dict(loss="hinge"), ValueError, r"Trainer: unknown loss 'hinge'"),
    (dict(callbacks=None), TypeError, r"Trainer: callbacks must be a list or tuple of ck\.train\.Callback "
                                      r"instances, got NoneType"),
    (dict(callbacks=ck.EarlyStopping()), TypeError, r"Trainer: callbacks must be a list or tuple .*got "
                                                     r"EarlyStopping \(wrap one in a list\)"),
    (dict(callbacks=[print]), TypeError, r"Trainer: callbacks must be ck\.train\.Callback instances, got "
                                         r"builtin_function_or_method"),
    (dict(regularizers=None), TypeError, r"Trainer: regularizers must be a list or tuple of ck\.regularizers "
                                         r"objects, got NoneType"),
    (dict(regularizers=[0.01]), TypeError, r"Trainer: regularizers must be ck\.regularizers objects "
                                           r"\(L1, L2, ElasticNet\), got float"),
    (dict(schedule_interval="batch"), ValueError, r"Trainer: schedule_interval must be 'epoch' or 'step', "
                                                  r"got 'batch'"),
    (dict(nonfinite=True), ValueError, r"Trainer: nonfinite must be 'skip' or 'raise' or None, got True"),
])
def test_constructor_refuses_bad_arguments(kw, exc, message):
    model = _model()
    opt = ck.optim.SGD(model.parameters(), lr=0.1)
    args = dict(model=model, optimizer=opt)
    if kw.get("optimizer") == "lbfgs":
        kw = dict(optimizer=ck.optim.LBFGS(model.parameters()))
    if kw.get("schedule") == "other":
        kw = dict(schedule=ck.schedules.Cosine(ck.optim.SGD(_model(1).parameters(), lr=0.1), T_max=3))
    args.update(kw)
    with pytest.raises(exc, match=message):
        ck.Trainer(**args)


def test_constructor_leaves_the_optimizer_alone_when_it_refuses():
    model = _model()
    opt = ck.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError):
        ck.Trainer(model, opt, nonfinite="raise", quit_factor=0.5)
    assert opt.nonfinite == "skip"


@pytest.mark.parametrize("kw, exc, message", [
    (dict(epochs=0), ValueError, r"fit: epochs must be >= 1, got 0"),
    (dict(epochs=2.0), TypeError, r"fit: epochs must be an int, got float"),
    (dict(epochs=True), TypeError, r"fit: epochs must be an int, got bool"),
    (dict(batch_size=0), ValueError, r"fit: batch_size must be >= 1, got 0"),
    (dict(batch_size="32"), TypeError, r"fit: batch_size must be an int, got str"),
    (dict(shuffle="yes"), TypeError, r"fit: shuffle must be a bool, got str"),
    (dict(seed=-1), ValueError, r"fit: seed must be >= 0, got -1"),
    (dict(seed=1.5), TypeError, r"fit: seed must be an int, got float"),
    (dict(transform=5), TypeError, r"fit: transform must be callable or None, got int"),
    (dict(plots="no"), TypeError, r"fit: plots must be a bool, got str"),
    (dict(run_dir=5), TypeError, r"fit: run_dir must be a folder path \(str or os\.PathLike\) or None, got int"),
    (dict(val=5), TypeError, r"fit: val must be a DataLoader, an \(x, y\) pair of arrays, a dataset or None, "
                             r"got int"),
    (dict(train=5), TypeError, r"fit: train must be a DataLoader, an \(x, y\) pair of arrays or a dataset, "
                               r"got int"),
])
def test_fit_refuses_bad_arguments_before_training(kw, exc, message):
    model = _model()
    tr = ck.Trainer(model, ck.optim.SGD(model.parameters(), lr=0.1), progress=False)
    w0 = [p.data.copy() for p in model.parameters()]
    args = dict(train=digits()["train"], epochs=1)
    args.update(kw)
    with pytest.raises(exc, match=message):
        tr.fit(**args)
    assert all(np.array_equal(a, p.data) for a, p in zip(w0, model.parameters()))
    assert tr.step == 0 and tr.history.iterations["step"] == []


@pytest.mark.parametrize("make, exc, message", [
    (lambda: ck.EarlyStopping(monitor=None), TypeError, r"EarlyStopping: monitor must be a metric name \(str\), got NoneType"),
    (lambda: ck.EarlyStopping(patience=True), TypeError, r"EarlyStopping: patience must be an int, got bool"),
    (lambda: ck.EarlyStopping(patience=-1), ValueError, r"EarlyStopping: patience must be >= 0, got -1"),
    (lambda: ck.EarlyStopping(min_delta="0.1"), TypeError, r"EarlyStopping: min_delta must be a number, got str"),
    (lambda: ck.EarlyStopping(min_delta=-0.1), ValueError, r"EarlyStopping: min_delta must be >= 0"),
    (lambda: ck.EarlyStopping(restore_best="no"), TypeError, r"EarlyStopping: restore_best must be a bool, got str"),
    (lambda: ck.train.EMA(decay="0.9"), TypeError, r"EMA: decay must be a number, got str"),
    (lambda: ck.train.EMA(decay=1.0), ValueError, r"EMA: decay must be in \(0, 1\), got 1.0"),
    (lambda: ck.train.EMA(warmup="yes"), TypeError, r"EMA: warmup must be a bool, got str"),
    (lambda: ck.train.Polyak(start_step=-3), ValueError, r"Polyak: start_step must be >= 0, got -3"),
    (lambda: ck.train.Polyak(start_step=2.5), TypeError, r"Polyak: start_step must be an int, got float"),
    (lambda: ck.train.SWA(start_epoch=0), ValueError, r"SWA: start_epoch must be >= 1, got 0"),
    (lambda: ck.train.SnapshotSaver("snaps", every_epochs=0), ValueError,
     r"SnapshotSaver: every_epochs must be >= 1, got 0"),
    (lambda: ck.train.SnapshotSaver(None), TypeError, r"SnapshotSaver: folder must be a path"),
])
def test_callbacks_refuse_bad_arguments(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_train_and_dataset_modules_take_their_argument_checks_from_validate():
    """check_int / check_float / check_flag have one home, cnnkit._validate: the training and dataset
    modules import them from there, not through the modules that re-export them (ops, graph, data._common)."""
    import ast
    import pathlib
    root = pathlib.Path(ck.__file__).parent
    files = sorted((root / "train").glob("*.py")) + [root / "data" / f"{m}.py" for m in (
        "arrays", "cifar", "cifar_pickle", "datasets", "digits", "folder", "mnist", "_files")]
    checkers = {"check_int", "check_float", "check_flag", "_int", "_flag"}
    wrong = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.module != "_validate":
                names = {a.name for a in node.names} & checkers
                if names:
                    wrong.append(f"{f.relative_to(root)}: {sorted(names)} from {'.' * node.level}{node.module}")
    assert wrong == []
