"""ck.Trainer: fit, evaluate and predict, with the lecture's babysitting built in.

One training step is: zero the gradients, forward, data loss (+ regularisation penalties), backward
(skipping every gradient nothing needs), optimizer step (which checks the gradients are finite first and
skips or raises by its ``nonfinite`` policy), then per-iteration schedules. The trainer records a History,
shows a progress bar (one line per epoch when output is not a terminal), stops early when the loss passes
3 times its initial value (CS231n's quit-early rule), writes checkpoints that resume bit for bit, and
draws the plots into its run folder.
"""
import copy
import math
import os
import sys
import time
import types

import numpy as np

from .. import losses as _losses
from ..data._common import check_float
from ..ops import _int
from .._validate import check_flag as _flag
from ..layer import Layer
from .._xp import array_module, is_device_array
from ..data.loader import DataLoader, as_loader
from ..schedules import ReduceOnPlateau
from . import checkpoint as ckpt
from .callbacks import Callback
from .history import History

_LOSSES = {"softmax_cross_entropy": _losses.softmax_cross_entropy, "cross_entropy": _losses.softmax_cross_entropy,
           "svm": _losses.svm_loss, "svm_loss": _losses.svm_loss, "mse": _losses.mse}


def resolve_loss(op, loss):
    """The loss function for `loss`: a callable ``loss(scores, y) -> (value, dscores)`` as it is, or one of the
    names in _LOSSES. The Trainer and ck.lr_find both take a loss this way."""
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(f"{op}: unknown loss {loss!r}; expected one of {sorted(_LOSSES)} or a callable")
        return _LOSSES[loss]
    if not callable(loss):
        raise TypeError(f"{op}: loss must be callable or one of {sorted(_LOSSES)}, got {type(loss).__name__}")
    return loss


def _check_data(op, name, data, optional=False):
    """train / val data: a DataLoader, an (x, y) pair, or a dataset with len() and indexing (val: or None)."""
    if data is None and optional:
        return
    ok = isinstance(data, DataLoader) or (isinstance(data, (tuple, list)) and len(data) == 2) or (
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


def _layer_of(param_name):
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


class Trainer:
    """Trains `model` with `optimizer` on `loss` (a callable ``loss(scores, y) -> (value, dscores)`` or one
    of "softmax_cross_entropy", "svm", "mse").

    schedule: a ck.schedules schedule, stepped once per epoch (``schedule_interval="epoch"``, the PyTorch
    convention) or once per iteration ("step"); ReduceOnPlateau is stepped with the validation loss.
    regularizers: ck.regularizers objects; their penalty is added to the reported loss and their gradient
    to the parameter gradients. callbacks: ck.train callbacks (EarlyStopping, averaging, snapshots...).
    quit_factor: stop when the loss passes this multiple of its initial value (None disables it).
    ratio_every: record each layer's update/weight ratio every this many iterations (0 disables it).
    progress: True (tqdm bar on a terminal, one line per ``log_every`` iterations otherwise), or False.
    nonfinite: "skip" or "raise" sets the optimizer's policy for non-finite gradients (checked before any
    parameter changes; a skipped step leaves parameters and state bit-unchanged and is counted). A step whose
    loss is not finite (on the CPU) is skipped or raised the same way before the optimizer sees it. Skipped
    steps are counted in ``history.skipped_steps``, in each epoch's ``skipped_steps`` and in the progress
    output; the run goes on. Only the quit-early rule ends it: the loss passing ``quit_factor`` times its
    first finite value, or a whole epoch's worth of non-finite losses in a row.
    A run stopped inside an epoch (the quit-early rule, a KeyboardInterrupt, a callback's ``stop_training``)
    returns its History with that epoch logged as far as it got (``"partial": True``, ``"steps"``).

    On a GPU (``model.to("cuda")`` before building the optimizer or the trainer): each batch goes to the device
    in one copy (unless the loader already yields device arrays), and nothing is read back inside a step. The
    losses, correct counts and update ratios stay on the device and are read back together every
    ``log_every`` steps (default 25), at the end of an epoch and before a checkpoint; the history, the
    progress bar and the quit-early rule see them then (so a run may go up to ``log_every - 1`` steps past
    the step that trips the rule). Callbacks' ``on_step_end`` get the loss as a 0-d device array there.
    """

    def __init__(self, model, optimizer, loss="softmax_cross_entropy", schedule=None, regularizers=(),
                 callbacks=(), schedule_interval="epoch", quit_factor=3.0, ratio_every=50, progress=True,
                 log_every=None, nonfinite=None):
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
        if nonfinite is not None:
            optimizer.nonfinite = nonfinite  # the optimizer checks every gradient before it changes anything
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss
        self.schedule = schedule
        self.schedule_interval = schedule_interval
        self.regularizers = list(regularizers)
        self.callbacks = list(callbacks)
        self.quit_factor = quit_factor
        self.ratio_every = ratio_every
        self.progress = progress
        self.log_every = log_every
        self.history = History()
        self.step = 0            # optimizer steps attempted (skipped ones included)
        self.epoch = 0           # the epoch in progress (0-based)
        self.stop_training = False
        self.run_dir = None
        self._acc = None         # running sums of the epoch in progress (resumable)
        self._pending = []       # on a GPU: (step, epoch, loss, correct, count, lr) not yet read back
        self._pending_ratios = []
        self._skip_base = None   # the optimizer's skipped_steps when last read
        self._skip_run = 0       # skipped steps in a row (the quit-early rule)
        self._step_skipped = False   # whether the step being booked was skipped
        self._steps_per_epoch = None
        self._out = None         # the epoch in progress's progress state (bar, start time)
        self._epoch_steps_done = False   # resumed after the last step of self.epoch, before its end

    # ------------------------------------------------------------ helpers
    @property
    def lr(self):
        return float(self.optimizer.param_groups[0]["lr"])

    def _params(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def _data_loss(self, scores, y):
        """(loss, dscores); the loss a float, or a 0-d device array when the scores are on a GPU (no host read)."""
        loss, dscores = self.loss_fn(scores, y)
        return (loss if is_device_array(loss) else float(loss)), dscores

    def _xp(self):
        """The array module of the model's parameters (numpy, or cupy when the model is on a GPU)."""
        for p in self.model.parameters():
            return array_module(p.data)
        return np

    def to_device(self, x, y):
        """(x, y) with the inputs moved to the model's device (one host-to-device copy); labels stay where they
        are. What fit and evaluate do to each batch; callbacks that run the model on data use it too."""
        xp = self._xp()
        if xp is not np and not is_device_array(x):
            x = xp.asarray(x)
        return x, y

    @staticmethod
    def _correct(scores, y):
        """Number of rows whose argmax is the label: an int, or a 0-d device array when the scores are on a GPU."""
        dtype = y.dtype if hasattr(y, "dtype") else np.asarray(y).dtype
        if scores.ndim != 2 or not np.issubdtype(dtype, np.integer):
            return 0
        xp = array_module(scores)
        hit = (scores.argmax(axis=1) == xp.asarray(y)).sum()
        return hit if xp is not np else int(hit)

    def _emit(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # ------------------------------------------------------------ one step
    def train_step(self, x, y):
        """One optimizer step on a batch; returns (loss including penalties, number correct).

        A non-finite loss (a float: the CPU) is not trained on: with the optimizer's nonfinite="raise" it is a
        FloatingPointError, else the step is skipped and counted, parameters and optimizer state untouched.
        On a GPU the loss stays on the device, and the optimizer's gradient check decides alone."""
        model, opt = self.model, self.optimizer
        self._step_skipped = False
        model.train()
        opt.zero_grad()
        scores = model(x)
        loss, dscores = self._data_loss(scores, y)
        if self.regularizers:
            params = self._params()
            loss += sum(r.loss(params) for r in self.regularizers)
            for r in self.regularizers:
                r.add_grad(params)
        host = self._xp() is np     # the optimizer's skip counter is a plain int: read it every step
        if not is_device_array(loss) and not math.isfinite(loss):
            if opt.nonfinite == "raise":
                raise FloatingPointError(
                    f"Trainer: the loss is {loss} at iteration {self.step + 1} (nonfinite='raise'); look for Inf "
                    f"or NaN in the data or lower the learning rate (nonfinite='skip' skips such steps)")
            self._count_skips(1)
            self._step_skipped = True
            self._schedule_step()
            return loss, self._correct(scores, y)
        model.backward(dscores, need_dx=False)
        want_ratio = self.ratio_every > 0 and self.step % self.ratio_every == 0
        before = {n: p.data.copy() for n, p in model.named_parameters() if p.requires_grad} if want_ratio else None
        if host and self._skip_base is None:
            self._skip_base = opt.skipped_steps
        opt.step()
        if host and self._sync_skips():
            self._step_skipped = True
            want_ratio = False      # the step changed nothing: no update/weight ratio to log
        if want_ratio:
            ratios = self._ratios(before)
            if any(is_device_array(v) for v in ratios.values()):
                self._pending_ratios.append((self.step, ratios))   # read back with the losses
            else:
                self.history.log_ratios(self.step, ratios)
        self._schedule_step()
        return loss, self._correct(scores, y)

    def _schedule_step(self):
        if (self.schedule is not None and self.schedule_interval == "step"
                and not isinstance(self.schedule, ReduceOnPlateau)):
            self.schedule.step()

    def _count_skips(self, k):
        """Book k skipped steps: in the History and in the epoch in progress."""
        self.history.skipped_steps += k
        if self._acc is not None:
            self._acc["skipped"] = self._acc.get("skipped", 0) + k

    def _sync_skips(self):
        """Book the steps the optimizer skipped since its counter was last read (on a GPU: one host sync);
        returns how many."""
        n = int(self.optimizer.skipped_steps)
        k = n - self._skip_base if self._skip_base is not None and n > self._skip_base else 0
        self._skip_base = n
        if k:
            self._count_skips(k)
        return k

    def _ratios(self, before):
        """Per layer, ||update|| / ||weights before||: floats, or 0-d device arrays on a GPU (NaN for zero weights)."""
        num, den = {}, {}
        kinds = {path: type(l).__name__ for path, l in self.model.named_layers()}
        for n, p in self.model.named_parameters():
            if n not in before:
                continue
            path = _layer_of(n)
            layer = f"{path} {kinds[path]}" if path in kinds and kinds[path] not in path else path
            xp = array_module(p.data)
            num[layer] = num.get(layer, 0.0) + xp.sum((p.data.astype(np.float64) - before[n]) ** 2)
            den[layer] = den.get(layer, 0.0) + xp.sum(before[n].astype(np.float64) ** 2)
        out = {}
        for k in num:
            xp = array_module(num[k])
            if xp is np:
                out[k] = math.sqrt(num[k]) / math.sqrt(den[k]) if den[k] > 0 else float("nan")
            else:
                out[k] = xp.where(den[k] > 0, xp.sqrt(num[k]) / xp.sqrt(den[k]), xp.nan)
        return out

    # ------------------------------------------------------------ evaluation
    def evaluate(self, data, batch_size=256):
        """Mean loss (data loss, no penalties) and accuracy over `data`, in eval mode. -> dict(loss, acc)."""
        if data is None:
            raise TypeError("evaluate: data must be a DataLoader, an (x, y) pair of arrays or a dataset, got None")
        loader = as_loader(data, batch_size, False, 0, device=self.model.device)
        was_training = self.model.training
        self.model.eval()
        total, correct, n = 0.0, 0, 0
        try:
            for x, y in loader:
                x, y = self.to_device(x, y)
                scores = self.model(x)
                loss, _ = self._data_loss(scores, y)
                if is_device_array(loss):              # device sums stay there until the end, in float64
                    loss = loss.astype(np.float64)
                total = total + loss * len(y)
                correct = correct + self._correct(scores, y)
                n += len(y)
        finally:
            self.model.train(was_training)
        total, correct = float(total), int(correct)
        return {"loss": total / max(n, 1), "acc": correct / max(n, 1)}

    def predict(self, x, batch_size=256):
        """Model outputs (scores) for inputs x, in eval mode, batch by batch."""
        was_training = self.model.training
        self.model.eval()
        try:
            outs = [self.model(self.to_device(np.ascontiguousarray(x[i:i + batch_size]), None)[0])
                    for i in range(0, len(x), batch_size)]
        finally:
            self.model.train(was_training)
        if not outs:
            return np.empty((0,))
        out = array_module(outs[0]).concatenate(outs)
        return out.get() if is_device_array(out) else out   # numpy, as Keras' predict

    def predict_proba(self, x, batch_size=256):
        """Softmax probabilities of predict()."""
        s = self.predict(x, batch_size).astype(np.float64)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self, loader=None):
        """Everything a resume needs except the tensors, with arrays split out (see checkpoint.split_arrays)."""
        tensors = {}
        self._flush()
        for n, p in self.model.named_parameters():
            tensors[f"model/param/{n}"] = ckpt.host(p.data)
        for n, b in self.model.named_buffers():
            tensors[f"model/buffer/{n}"] = ckpt.host(b)
        # A checkpoint taken after the last step of an epoch but before its end-of-epoch work (validation,
        # schedule, callbacks) records that the epoch's steps are all done, so a resume goes straight to that
        # work instead of running the epoch again on the loader's next epoch.
        steps_done = bool(self._acc is not None and loader is not None and loader.state_dict()["epoch"] > self.epoch)
        state = {
            "step": self.step, "epoch": self.epoch, "acc": self._acc, "epoch_steps_done": steps_done,
            "model_signature": ckpt.model_signature(self.model),
            "model_rng": {k: [str(s), str(o)] for k, (s, o) in self.model.rng_state().items()},
            "optimizer": ckpt.split_arrays(self.optimizer.state_dict(), "optimizer", tensors),
            "schedule": (None if self.schedule is None
                         else ckpt.split_arrays(self.schedule.state_dict(), "schedule", tensors)),
            "loader": None if loader is None else loader.state_dict(),
            "history": self.history.state_dict(),
            "callbacks": [ckpt.split_arrays(cb.state_dict(), f"callback/{i}", tensors)
                          for i, cb in enumerate(self.callbacks)],
        }
        return state, tensors

    def save_checkpoint(self, folder, loader=None, keep=2):
        state, tensors = self.state_dict(loader)
        return ckpt.write_checkpoint(folder, self.step, state, tensors, keep=keep)

    def load_checkpoint(self, path, loader=None):
        """Restore model, optimizer, schedule, RNG counters, history, callbacks and the loader's position.

        The whole checkpoint is checked first (types, ranges, consistency; ckpt.check_state), and the
        components are then restored from a snapshot-backed transaction: if one of them still refuses its
        state, everything restored so far is put back, so a failed resume leaves the trainer as it was. Every
        failure is a CheckpointError naming the file and the field."""
        state, tensors = ckpt.read_checkpoint(path)
        cpath = ckpt.resolve(path)
        ckpt.check_state(cpath, state)
        sig, want = state["model_signature"], ckpt.model_signature(self.model)
        if sig != want:
            missing = sorted(set(want) - set(sig))
            extra = sorted(set(sig) - set(want))
            diff = sorted(k for k in set(sig) & set(want) if sig[k] != want[k])
            raise ckpt.CheckpointError(
                f"resume: checkpoint {cpath} is from an incompatible model: missing {missing[:5]}, "
                f"unexpected {extra[:5]}, different shape or dtype {[(k, sig[k], want[k]) for k in diff[:5]]}")
        arrays = {}
        for kind, named in (("param", ((n, p.data) for n, p in self.model.named_parameters())),
                            ("buffer", self.model.named_buffers())):
            for n, a in named:
                key = f"model/{kind}/{n}"
                t = tensors.get(key)
                if t is None or tuple(t.shape) != tuple(a.shape) or t.dtype != a.dtype:
                    raise ckpt.CheckpointError(
                        f"resume: {cpath}: tensor {key!r} is missing or does not match its model_signature entry")
                arrays[key] = t
        unknown = sorted(set(self.model.rng_state()) ^ set(state["model_rng"]))
        if unknown:
            raise ckpt.CheckpointError(f"resume: {cpath}: field 'state.model_rng' names other random streams "
                                       f"than the model's: {unknown[:5]}")
        parts = {}
        for field in ("optimizer", "schedule", "callbacks"):
            try:
                parts[field] = ckpt.join_arrays(state[field] if field != "callbacks" else state.get(field, []),
                                                tensors)
            except (KeyError, TypeError, AttributeError) as e:
                raise ckpt.CheckpointError(f"resume: {cpath}: field 'state.{field}' refers to a tensor the "
                                           f"tensor file does not hold ({e!r})") from None
        snapshot = self._snapshot(loader)
        field = None
        try:
            field = "model"
            for n, p in self.model.named_parameters():
                p.data[...] = array_module(p.data).asarray(arrays[f"model/param/{n}"])
            for n, b in self.model.named_buffers():
                b[...] = array_module(b).asarray(arrays[f"model/buffer/{n}"])
            field = "model_rng"
            self.model.set_rng_state({k: (int(s), int(o)) for k, (s, o) in state["model_rng"].items()})
            field = "optimizer"
            self.optimizer.load_state_dict(parts["optimizer"])
            if self.schedule is not None and parts["schedule"] is not None:
                field = "schedule"
                self.schedule.load_state_dict(parts["schedule"])
            if loader is not None and state["loader"] is not None:
                field = "loader"
                loader.load_state_dict(state["loader"])
            field = "history"
            self.history.load_state_dict(state["history"])
            field = "callbacks"
            for cb, cs in zip(self.callbacks, parts["callbacks"]):
                cb.load_state_dict(cs)
        except Exception as e:
            self._restore(snapshot, loader)
            raise ckpt.CheckpointError(f"resume: {cpath}: field 'state.{field}' was refused ({e!r})"[:1000]) from None
        self.step, self.epoch, self._acc = state["step"], state["epoch"], copy.deepcopy(state["acc"])
        self._epoch_steps_done = bool(state.get("epoch_steps_done", False))
        return state

    def _snapshot(self, loader):
        """Copies of everything load_checkpoint changes, for _restore."""
        return {"params": [p.data.copy() for p in self.model.parameters()],
                "buffers": [b.copy() for _, b in self.model.named_buffers()],
                "rng": self.model.rng_state(),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "schedule": None if self.schedule is None else copy.deepcopy(self.schedule.state_dict()),
                "loader": None if loader is None else loader.state_dict(),
                "history": copy.deepcopy(self.history.state_dict()),
                "callbacks": [copy.deepcopy(cb.state_dict()) for cb in self.callbacks]}

    def _restore(self, snap, loader):
        for p, a in zip(self.model.parameters(), snap["params"]):
            p.data[...] = a
        for (_, b), a in zip(self.model.named_buffers(), snap["buffers"]):
            b[...] = a
        self.model.set_rng_state(snap["rng"])
        self.optimizer.load_state_dict(snap["optimizer"])
        if snap["schedule"] is not None:
            self.schedule.load_state_dict(snap["schedule"])
        if loader is not None:
            loader.load_state_dict(snap["loader"])
        self.history.load_state_dict(snap["history"])
        for cb, cs in zip(self.callbacks, snap["callbacks"]):
            cb.load_state_dict(cs)

    # ------------------------------------------------------------ fit
    def fit(self, train, val=None, epochs=1, batch_size=64, shuffle=True, seed=0, transform=None,
            checkpoint_dir=None, checkpoint_every=1, checkpoint_every_steps=None, resume=None, run_dir=None,
            plots=True):
        """Train for `epochs` epochs (counting from 0; a resumed run continues to the same total).

        train / val: a DataLoader, an (x, y) pair or a dataset. A pair or dataset is wrapped in a DataLoader
        with `batch_size`, `shuffle`, `seed` and `transform`. checkpoint_dir: write a checkpoint every
        `checkpoint_every` epochs and/or every `checkpoint_every_steps` iterations (0 or None: not by that
        count). resume: a checkpoint folder or file to continue from (bit-exact on the same machine and
        thread count, from a mid-epoch checkpoint and now also at epoch ends: a per-step checkpoint taken at an
        epoch's last step continues with that epoch's end-of-epoch work). run_dir: where history.json, the CSVs
        and the plots go at the end. Returns the History.
        """
        self._check_fit_args(train, val, epochs, batch_size, shuffle, seed, transform, run_dir, plots)
        for name, v in (("checkpoint_every", checkpoint_every), ("checkpoint_every_steps", checkpoint_every_steps)):
            if v is not None:
                _int("fit", name, v, minimum=0)    # 0 and None: no checkpoints by this count
        loader = as_loader(train, batch_size, shuffle, seed, transform, device=self.model.device)
        val_loader = as_loader(val, 256, False, 0, device=self.model.device)
        self.run_dir = run_dir
        if checkpoint_dir:
            ckpt.clean_stale_temporaries(checkpoint_dir)
        if resume is not None:
            folder = os.fspath(resume) if os.path.isdir(resume) else os.path.dirname(os.fspath(resume))
            ckpt.clean_stale_temporaries(folder or ".")
            self.load_checkpoint(resume, loader)
        else:
            loader.set_epoch(self.epoch)
        self.stop_training = False
        self._skip_base = int(self.optimizer.skipped_steps)
        self._skip_run = 0
        steps_per_epoch = self._steps_per_epoch = len(loader)
        tty = bool(self.progress) and sys.stdout.isatty()
        log_every = self.log_every or steps_per_epoch
        sync_every = self.log_every or 25   # on a GPU: steps between reads of the losses
        self._emit("on_fit_start")
        try:
            self._epochs(loader, val_loader, epochs, checkpoint_dir, checkpoint_every, checkpoint_every_steps, tty,
                         log_every, sync_every, steps_per_epoch)
        except KeyboardInterrupt:
            self._interrupted()
        self._emit("on_fit_end")
        if run_dir:
            self.write_run(run_dir, plots=plots)
        return self.history

    def _epochs(self, loader, val_loader, epochs, checkpoint_dir, checkpoint_every, checkpoint_every_steps, tty,
                log_every, sync_every, steps_per_epoch):
        """fit's loop over the epochs (and within each, the steps)."""
        while self.epoch < epochs and not self.stop_training:
            epoch = self.epoch
            if self._acc is None:
                # loss and correct are summed over the steps with a finite loss (loss_count images), count
                # is every image (throughput); steps and skipped count this epoch's steps
                self._acc = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0, "loss_count": 0, "steps": 0,
                             "skipped": 0}
                self._emit("on_epoch_start", epoch)
            else:   # resumed from a checkpoint written before the finite-loss counts were kept
                self._acc.setdefault("loss_count", self._acc["count"])
                self._acc.setdefault("steps", None)
                self._acc.setdefault("skipped", 0)
            bar = None
            if tty:
                from tqdm import tqdm
                # A terminal that reports no width (0 columns, e.g. some ptys) would make tqdm draw nothing.
                import shutil
                width = shutil.get_terminal_size((100, 24)).columns or 100
                pos = loader.state_dict()
                bar = tqdm(total=steps_per_epoch, initial=pos["batch"] if pos["epoch"] == epoch else 0,
                           desc=f"epoch {epoch + 1}/{epochs}", leave=True, ncols=width)
            t0 = time.perf_counter()
            out = self._out = types.SimpleNamespace(bar=bar, t0=t0, epochs=epochs, log_every=log_every,
                                                    steps_per_epoch=steps_per_epoch)
            batches = () if self._epoch_steps_done else loader
            self._epoch_steps_done = False
            for x, y in batches:
                x, y = self.to_device(x, y)
                loss, correct = self.train_step(x, y)
                self.step += 1
                due = bool(checkpoint_dir and checkpoint_every_steps and self.step % checkpoint_every_steps == 0)
                if is_device_array(loss):
                    self._pending.append((self.step, epoch, loss, correct, len(y), self.lr))
                    self._emit("on_step_end", self.step, loss)
                    if len(self._pending) >= sync_every or due:
                        self._flush(out)
                else:
                    self._record(self.step, epoch, loss, correct, len(y), self.lr, out)
                    self._emit("on_step_end", self.step, loss)
                if self.history.stop_reason:
                    self.stop_training = True
                    break
                if due:
                    self._acc["seconds"] += time.perf_counter() - t0
                    t0 = out.t0 = time.perf_counter()
                    self.save_checkpoint(checkpoint_dir, loader)
                if self.stop_training:
                    break
            self._flush(out)
            self._sync_skips()   # on a GPU: the optimizer's skip counter, read once an epoch
            if bar is not None:
                bar.close()
            self._out = None
            if self.history.stop_reason:
                self._acc["seconds"] += time.perf_counter() - out.t0
                self._log_partial_epoch(epoch)
                break
            self._acc["seconds"] += time.perf_counter() - t0
            self._end_epoch(epoch, epochs, val_loader, tty)
            if checkpoint_dir and checkpoint_every and (epoch + 1) % checkpoint_every == 0:
                self.save_checkpoint(checkpoint_dir, loader)

    def _interrupted(self):
        """A KeyboardInterrupt inside fit: book what the device still holds, log the epoch in progress as far
        as it got, and say so; fit then ends normally and returns the History."""
        out, self._out = self._out, None
        if out is not None and out.bar is not None:
            out.bar.close()
        self._flush()
        self._sync_skips()
        reason = f"interrupted (KeyboardInterrupt) at iteration {self.step}"
        if not self.history.stop_reason:
            self.history.stop_reason = reason
        self.history.events.append(reason)
        print(f"cnnkit: stopping: {reason}", file=sys.stderr, flush=True)
        self.stop_training = True
        if self._acc is not None:
            if out is not None:
                self._acc["seconds"] += time.perf_counter() - out.t0
            self._log_partial_epoch(self.epoch)

    def _log_partial_epoch(self, epoch):
        """Log the epoch a stopped run did not finish (no validation, no epoch-end callbacks or schedule)."""
        if self._acc and (self._acc.get("steps") or self._acc["count"]):
            logs = self._epoch_logs(epoch)
            logs["partial"] = True
            self.history.log_epoch(**logs)

    @staticmethod
    def _check_fit_args(train, val, epochs, batch_size, shuffle, seed, transform, run_dir, plots):
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

    def _record(self, step, epoch, loss, correct, count, lr, out=None):
        """Book one step (loss a float): epoch sums, history, progress, and the quit-early rule."""
        acc = self._acc
        finite = math.isfinite(loss)
        if not finite and self.optimizer.nonfinite == "raise":   # a GPU loss, read back only now
            raise FloatingPointError(
                f"Trainer: the loss is {loss} at iteration {step} (nonfinite='raise'); look for Inf or NaN in the "
                f"data or lower the learning rate (nonfinite='skip' skips such steps)")
        if finite:       # a skipped step's loss is left out of the epoch's means
            acc["loss"] += loss * count
            acc["correct"] += correct
            acc["loss_count"] += count
        acc["count"] += count
        if acc["steps"] is not None:
            acc["steps"] += 1
        self.history.log_iteration(step, epoch, loss, lr)
        if out is not None:
            elapsed = acc["seconds"] + time.perf_counter() - out.t0
            skipped = acc.get("skipped", 0)
            if out.bar is not None:
                out.bar.update(1)
                extra = {"skipped": skipped} if skipped else {}
                out.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc['correct'] / max(acc['loss_count'], 1):.3f}",
                                    lr=f"{lr:.2e}", img_s=f"{acc['count'] / max(elapsed, 1e-9):.0f}", **extra)
            elif self.progress and step % out.log_every == 0 and out.log_every < out.steps_per_epoch:
                print(f"epoch {epoch + 1}/{out.epochs} step {step}: loss {loss:.4f} lr {lr:.2e}"
                      + (f" skipped {skipped}" if skipped else ""), flush=True)
        if not self.history.stop_reason:
            reason = self._quit_reason(loss, step)
            if reason:
                self.history.stop_reason = reason
                self.history.events.append(reason)
                print(f"cnnkit: stopping: {reason}", file=sys.stderr, flush=True)

    def _flush(self, out=None):
        """Read back the losses, counts and ratios a GPU run has kept on the device, in one transfer, and book
        them in step order. Nothing to do on the CPU."""
        pending, ratios = self._pending, self._pending_ratios
        if not pending and not ratios:
            return
        self._pending, self._pending_ratios = [], []
        scalars = [v for _, _, loss, correct, _, _ in pending for v in (loss, correct)]
        scalars += [v for _, r in ratios for v in r.values()]
        xp = array_module(*scalars)
        host = xp.stack([xp.asarray(v, dtype=xp.float64).reshape(()) for v in scalars]).get().tolist()
        # Which steps the optimizer skipped is not read back (its device counter is, once an epoch): here a
        # step counts as skipped for the quit-early rule when its loss is not finite.
        for i, (step, epoch, _, _, count, lr) in enumerate(pending):
            self._step_skipped = not math.isfinite(host[2 * i])
            self._record(step, epoch, host[2 * i], int(host[2 * i + 1]), count, lr, out)
        self._step_skipped = False
        if out is None and pending:
            self._sync_skips()   # before a checkpoint: the epoch's skip count complete in it
        k = 2 * len(pending)
        for step, r in ratios:
            self.history.log_ratios(step, dict(zip(r, host[k:k + len(r)])))
            k += len(r)

    def _initial_loss(self):
        """The first finite loss of the run (a skipped first step has none), or None."""
        return next((v for v in self.history.iterations["loss"] if math.isfinite(v)), None)

    def _quit_reason(self, loss, step=None):
        """CS231n's quit-early rule, when quit_factor is set: the loss passed quit_factor times its first finite
        value, or a whole epoch's worth of steps in a row was skipped for a non-finite loss or gradient (the
        weights no longer change)."""
        step = self.step if step is None else step
        qf = self.quit_factor
        if qf is None:
            return None
        if self._step_skipped:
            self._skip_run += 1
            n = self._skip_run
            if self._steps_per_epoch and n >= self._steps_per_epoch:
                return (f"quit_factor={qf:g}: {n} steps in a row were skipped for a non-finite loss or gradient "
                        f"(iterations {step - n + 1} to {step}, an epoch's worth; the weights no longer change) "
                        f"(CS231n's quit-early rule; quit_factor=None disables it): lower the learning rate or "
                        f"look for Inf or NaN in the data")
            return None
        self._skip_run = 0
        if not math.isfinite(loss):
            return None
        first = self._initial_loss()
        if first is not None and first > 0 and loss > qf * first:
            return (f"quit_factor={qf:g}: the loss {loss:.4g} at iteration {step} passed {qf:g} x the initial "
                    f"loss {first:.4g} = {qf * first:.4g} (CS231n's quit-early rule; quit_factor=None disables "
                    f"it): the learning rate is probably too high")
        return None

    def _epoch_logs(self, epoch):
        """The epoch's record from its running sums: means over the steps with a finite loss (NaN when every
        step was skipped), this epoch's skipped steps and, when known, its step count."""
        acc = self._acc
        n = acc["loss_count"]
        logs = {"epoch": epoch + 1, "train_loss": acc["loss"] / n if n else float("nan"),
                "train_acc": acc["correct"] / n if n else float("nan"), "seconds": acc["seconds"],
                "images_per_s": acc["count"] / max(acc["seconds"], 1e-9), "lr": self.lr,
                "skipped_steps": int(acc.get("skipped", 0))}
        if acc.get("steps") is not None:
            logs["steps"] = acc["steps"]
        return logs

    def _end_epoch(self, epoch, epochs, val_loader, tty):
        logs = self._epoch_logs(epoch)
        if self._steps_per_epoch and logs.get("steps", self._steps_per_epoch) < self._steps_per_epoch:
            logs["partial"] = True     # stop_training was set inside the epoch
        if val_loader is not None:
            v = self.evaluate(val_loader)
            logs["val_loss"], logs["val_acc"] = v["loss"], v["acc"]
        self.history.log_epoch(**logs)
        if self.schedule is not None:
            if isinstance(self.schedule, ReduceOnPlateau):
                self.schedule.step(logs.get("val_loss", logs["train_loss"]))
            elif self.schedule_interval == "epoch":
                self.schedule.step()
        if self.progress:
            line = (f"epoch {epoch + 1}/{epochs}: loss {logs['train_loss']:.4f} acc {logs['train_acc']:.4f}")
            if "val_acc" in logs:
                line += f" | val loss {logs['val_loss']:.4f} acc {logs['val_acc']:.4f}"
            line += f" | lr {logs['lr']:.2e} | {logs['images_per_s']:.0f} img/s"
            k = logs["skipped_steps"]
            if k:
                line += f" | skipped {k} non-finite step{'s' if k != 1 else ''}"
            print(line, flush=True)
        self._acc = None
        self.epoch = epoch + 1
        self._emit("on_epoch_end", epoch, logs)

    def write_run(self, folder, plots=True):
        """history.json, the CSVs, and (plots=True) the PNG plots into `folder`."""
        os.makedirs(folder, exist_ok=True)
        self.history.to_json(os.path.join(folder, "history.json"))
        self.history.to_csv(folder)
        if plots:
            self.history.plot(folder, model=self.model)

    # ------------------------------------------------------------ babysitting
    def sanity_check(self, train, num_classes=None, batch_size=64, overfit_samples=20, overfit_steps=300,
                     verbose=True):
        """The lecture's checks before a long run; returns a SanityReport (``.passed``, ``.checks``)."""
        from .sanity import run_sanity_check
        report = run_sanity_check(self, train, num_classes=num_classes, batch_size=batch_size,
                                  overfit_samples=overfit_samples, overfit_steps=overfit_steps)
        if verbose:
            print(report)
        return report

    def clone_optimizer(self, params):
        """A fresh optimizer of the same class and hyperparameters (group 0's) over `params`."""
        g = self.optimizer.param_groups[0]
        hyper = {k: v for k, v in g.items() if not k.startswith("_") and k != "params"}
        for k in ("l1", "max_norm", "decay_bias"):
            hyper.pop(k, None)
        try:
            return type(self.optimizer)(params, **hyper)
        except TypeError:
            from ..optim import Adam
            return Adam(params, lr=1e-3)
