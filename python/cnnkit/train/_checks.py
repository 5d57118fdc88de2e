"""The Trainer's argument checks and its loss names: each refuses a bad argument before anything is built
or trained, naming the operation and the argument."""
import os

from .. import losses as _losses
from .._validate import check_flag as _flag, check_float, check_int as _int
from ..data.loader import DataLoader
from ..data.torch_loader import is_torch_loader
from ..layer import Layer
from ..schedules import ReduceOnPlateau
from .callbacks import Callback


_LOSSES = {"softmax_cross_entropy": _losses.softmax_cross_entropy, "cross_entropy": _losses.softmax_cross_entropy,
           "svm": _losses.svm_loss, "svm_loss": _losses.svm_loss, "mse": _losses.mse}


def resolve_loss(op, loss):
    """The loss function for `loss`: a callable ``loss(scores, y) -> (value, dscores)`` as it is, a ck.nn loss
    object (CrossEntropyLoss(), ...), or one of the names in _LOSSES. The Trainer and ck.lr_find both take a
    loss this way."""
    if callable(getattr(loss, "_trainer_loss", None)):
        return loss._trainer_loss      # a ck.nn loss class: its value and the gradient of its input
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(f"{op}: unknown loss {loss!r}; expected one of {sorted(_LOSSES)} or a callable")
        return _LOSSES[loss]
    if not callable(loss):
        raise TypeError(f"{op}: loss must be callable or one of {sorted(_LOSSES)}, got {type(loss).__name__}")
    return loss


def _check_data(op, name, data, optional=False):
    """train / val data: a DataLoader (cnnkit's or torch's), an (x, y) pair, or a dataset with len() and indexing
    (val: or None)."""
    if data is None and optional:
        return
    ok = isinstance(data, DataLoader) or is_torch_loader(data) or (
        isinstance(data, (tuple, list)) and len(data) == 2) or (
        data is not None and hasattr(data, "__len__") and hasattr(data, "__getitem__")
        and not isinstance(data, (str, bytes)))
    if not ok:
        what = "a DataLoader, an (x, y) pair of arrays, a dataset or None" if optional else \
            "a DataLoader, an (x, y) pair of arrays or a dataset"
        raise TypeError(f"{op}: {name} must be {what}, got {type(data).__name__}")


def _check_path(op, name, v):
    if v is not None and not isinstance(v, (str, os.PathLike)):
        raise TypeError(f"{op}: {name} must be a folder path (str or os.PathLike) or None, got {type(v).__name__}")


def _check_optimizer(op, model, optimizer):
    """The optimizer must be a cnnkit optimizer stepping without a closure, over the model's own Parameter
    objects (some of them is fine: fine-tuning a head). Parameters of another model would get no gradients
    from this model's backward, so the run would silently train nothing."""
    from ..optim import Optimizer, LBFGS
    if isinstance(optimizer, LBFGS):
        raise TypeError(f"{op}: optimizer must step without a closure (SGD, Adam...); LBFGS needs a closure "
                        f"per step: call lbfgs.step(closure) yourself")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{op}: optimizer must be a ck.optim optimizer (SGD, Adam...) over the model's "
                        f"parameters, got {type(optimizer).__name__}")
    own = {id(p) for p in model.parameters()}
    theirs = [p for g in optimizer.param_groups for p in g["params"]]
    foreign = sum(id(p) not in own for p in theirs)
    if foreign:
        raise ValueError(f"{op}: optimizer's parameters must be the model's parameters (the same Parameter "
                         f"objects); {foreign} of its {len(theirs)} parameters are not in the model (build the "
                         f"optimizer from model.parameters() of this model, after model.to(...))")


def _check_schedule(op, schedule, optimizer):
    from ..schedules import Schedule
    if schedule is None:
        return
    if not isinstance(schedule, (Schedule, ReduceOnPlateau)):
        raise TypeError(f"{op}: schedule must be a ck.schedules schedule or None, got {type(schedule).__name__}")
    if schedule.optimizer is not None and schedule.optimizer is not optimizer:
        raise ValueError(f"{op}: schedule drives another optimizer than the trainer's: it would change that "
                         f"optimizer's learning rate, not this one's; build it with this optimizer")
    if schedule.optimizer is None:
        raise ValueError(f"{op}: schedule has no optimizer to drive (built with optimizer=None); build it with "
                         f"the trainer's optimizer")


def check_fit_args(train, val, epochs, batch_size, shuffle, seed, transform, run_dir, plots):
    """Refuse bad fit() arguments before anything is built or trained."""
    op = "fit"
    _int(op, "epochs", epochs, minimum=1)
    _int(op, "batch_size", batch_size, minimum=1)
    _flag(op, "shuffle", shuffle)
    _int(op, "seed", seed, minimum=0)
    if transform is not None and not callable(transform):
        raise TypeError(f"{op}: transform must be callable or None, got {type(transform).__name__}")
    _check_path(op, "run_dir", run_dir)
    _flag(op, "plots", plots)
    _check_data(op, "train", train)
    _check_data(op, "val", val, optional=True)


def check_trainer_args(model, optimizer, loss, schedule, regularizers, callbacks, schedule_interval, quit_factor,
                       ratio_every, progress, log_every, nonfinite):
    """Refuse bad Trainer() arguments; returns (loss function, quit_factor, ratio_every, progress, log_every)
    as the Trainer keeps them."""
    op = "Trainer"
    if not isinstance(model, Layer):
        raise TypeError(f"{op}: model must be a cnnkit model (a ck.Layer: ck.Sequential, ck.Graph...), "
                        f"got {type(model).__name__}")
    _check_optimizer(op, model, optimizer)
    loss = resolve_loss(op, loss)
    _check_schedule(op, schedule, optimizer)
    if schedule_interval not in ("epoch", "step"):
        raise ValueError(f"{op}: schedule_interval must be 'epoch' or 'step', got {schedule_interval!r}")
    from ..regularizers import Regularizer
    for name, items, cls, what in (("regularizers", regularizers, Regularizer, "ck.regularizers objects"),
                                   ("callbacks", callbacks, Callback, "ck.train.Callback instances")):
        if not isinstance(items, (list, tuple)):
            hint = " (wrap one in a list)" if isinstance(items, cls) else ""
            raise TypeError(f"{op}: {name} must be a list or tuple of {what}, got {type(items).__name__}{hint}")
        for item in items:
            if not isinstance(item, cls):
                kinds = " (L1, L2, ElasticNet)" if cls is Regularizer else ""
                raise TypeError(f"{op}: {name} must be {what}{kinds}, got {type(item).__name__}")
    if nonfinite is not None and (not isinstance(nonfinite, str) or nonfinite not in ("skip", "raise")):
        raise ValueError(f"{op}: nonfinite must be 'skip' or 'raise' or None, got {nonfinite!r}")
    if quit_factor is not None:
        quit_factor = check_float(op, "quit_factor", quit_factor)
        if not quit_factor > 1:
            raise ValueError(f"{op}: quit_factor must be > 1 or None, got {quit_factor}")
    ratio_every = _int(op, "ratio_every", ratio_every, minimum=0)
    progress = _flag(op, "progress", progress)
    if log_every is not None:
        log_every = _int(op, "log_every", log_every, minimum=1)
    return loss, quit_factor, ratio_every, progress, log_every
