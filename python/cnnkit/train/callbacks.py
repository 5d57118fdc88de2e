"""Trainer callbacks: early stopping, the best model's file (ModelCheckpoint, as Keras's), weight averaging
(Polyak, EMA, SWA) and snapshot ensembles. TensorBoard logging is in tensorboard.py.

A callback sees the trainer at fixed points (fit start/end, epoch start/end, after each step) and can
save its own state into checkpoints (``state_dict`` / ``load_state_dict``: arrays allowed).
"""
import contextlib
import math
import os
import string

import numpy as np

from .._validate import check_flag as _flag, check_float, check_int as _int
from .._xp import array_module, is_device_array
from ..data.loader import as_loader
from ..serialize import _check_subclasses
from ..state_dict import export_torch_state_dict


class Callback:
    def on_fit_start(self, trainer): pass
    def on_epoch_start(self, trainer, epoch): pass
    def on_step_end(self, trainer, step, loss): pass
    def on_epoch_end(self, trainer, epoch, logs): pass
    def on_fit_end(self, trainer): pass
    def state_dict(self): return {}
    def load_state_dict(self, state): pass


def _weights(model):
    return {n: p.data.copy() for n, p in model.named_parameters()}


def _set_weights(model, weights):
    for n, p in model.named_parameters():
        p.data[...] = _like(weights[n], p.data)


def _like(a, ref):
    """`a` on the device of `ref` (an average restored from a checkpoint is numpy; the model may be on a GPU)."""
    if is_device_array(a) == is_device_array(ref):
        return a
    return a.get() if is_device_array(a) else array_module(ref).asarray(a)


def _monitor_mode(op, monitor, mode):
    """The direction in which `monitor` improves: "max" or "min"; None or "auto" guess it from the name as
    Keras does (an accuracy, "...acc", improves upwards; a loss or anything else downwards)."""
    if not isinstance(monitor, str):
        raise TypeError(f"{op}: monitor must be a metric name (str), got {type(monitor).__name__}")
    if mode is None or mode == "auto":
        return "max" if monitor.endswith("acc") else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"{op}: mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


def _monitored(op, monitor, logs):
    """The epoch's value of `monitor`; a ValueError naming the logged keys when the epoch did not log it."""
    v = logs.get(monitor)
    if v is None:
        raise ValueError(f"{op}: metric {monitor!r} is not logged; logged: {sorted(logs)} "
                         f"(val_* needs fit(val=...))")
    return float(v)


def _improves(v, best, mode, min_delta=0.0):
    """Whether `v` beats `best` (None: nothing yet) by more than min_delta; a NaN never does."""
    if math.isnan(v):
        return False
    if best is None:
        return True
    return v > best + min_delta if mode == "max" else v < best - min_delta


class EarlyStopping(Callback):
    """Stop when `monitor` ("val_acc", "val_loss", "train_loss"...) has not improved by `min_delta` for
    `patience` epochs; with restore_best, the best epoch's weights are put back when fit ends."""

    def __init__(self, monitor="val_acc", patience=5, mode=None, min_delta=0.0, restore_best=True):
        op = "EarlyStopping"
        mode = _monitor_mode(op, monitor, mode)
        patience = _int(op, "patience", patience, minimum=0)
        min_delta = check_float(op, "min_delta", min_delta, lo=0.0)
        restore_best = _flag(op, "restore_best", restore_best)
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, float(min_delta)
        self.restore_best = restore_best
        self.best, self.best_epoch, self.wait, self.best_weights = None, None, 0, None
        self.stopped_epoch = None

    def on_epoch_end(self, trainer, epoch, logs):
        v = _monitored("EarlyStopping", self.monitor, logs)
        if _improves(v, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = float(v), epoch + 1, 0
            if self.restore_best:
                self.best_weights = _weights(trainer.model)
        else:
            self.wait += 1
            if self.wait > self.patience:
                self.stopped_epoch = epoch + 1
                trainer.stop_training = True
                trainer.history.events.append(
                    f"early stopping at epoch {epoch + 1}: {self.monitor} has not improved for {self.wait} "
                    f"epochs (best {self.best:.4f} at epoch {self.best_epoch})")

    def on_fit_end(self, trainer):
        if self.restore_best and self.best_weights is not None:
            _set_weights(trainer.model, self.best_weights)

    def state_dict(self):
        d = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "stopped_epoch": self.stopped_epoch}
        if self.best_weights is not None:
            d["best_weights"] = self.best_weights
        return d

    def load_state_dict(self, s):
        self.best, self.best_epoch, self.wait = s["best"], s["best_epoch"], s["wait"]
        self.stopped_epoch = s.get("stopped_epoch")
        self.best_weights = s.get("best_weights")


class ModelCheckpoint(Callback):
    """Save the model at epoch ends, as Keras's ModelCheckpoint. With save_best_only (the default), only when
    `monitor` (a History key: "val_acc", "val_loss", "train_loss"...) beats its best so far in `mode` ("max",
    "min", or "auto": max for an accuracy, min otherwise); else every epoch. `filepath` may hold format fields
    filled from the epoch's logs, as in Keras: "ck-{epoch:03d}-{val_acc:.3f}.safetensors" (epoch counts from 1).

    save_weights_only: True writes the state dict under torch's names (``model.load_state_dict(path)`` reads it
    back), False the whole model (``ck.load(path)`` rebuilds it; a ck.Sequential or ck.Graph), None (the
    default) the whole model where ck.load can rebuild it, else the state dict (a ck.Module is code). Files
    are written atomically. ``best``, ``best_epoch`` (1-based) and ``best_path`` say what was kept."""

    def __init__(self, filepath="best.safetensors", monitor="val_acc", mode="auto", save_best_only=True,
                 save_weights_only=None, verbose=0):
        op = "ModelCheckpoint"
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"{op}: filepath must be a path (str or os.PathLike), got {type(filepath).__name__}")
        filepath = os.fspath(filepath)
        if not filepath.endswith(".safetensors"):
            raise ValueError(f"{op}: filepath must end in .safetensors (cnnkit never writes pickles), "
                             f"got {filepath!r}")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(filepath) if f is not None]
        except ValueError as e:
            raise ValueError(f"{op}: filepath {filepath!r} is not a valid format string ({e})") from None
        if "" in fields or any(f.isdigit() for f in fields):
            raise ValueError(f"{op}: filepath's format fields must be named after logged metrics, such as "
                             f"{{epoch}} or {{val_acc:.3f}}, got {filepath!r}")
        self.filepath = filepath
        self.monitor, self.mode = monitor, _monitor_mode(op, monitor, mode)
        self.save_best_only = _flag(op, "save_best_only", save_best_only)
        self.save_weights_only = None if save_weights_only is None else _flag(op, "save_weights_only",
                                                                             save_weights_only)
        self.verbose = _int(op, "verbose", verbose, minimum=0)
        self.best, self.best_epoch, self.best_path = None, None, None

    def _weights_only(self, model):
        """Whether to write the state dict; refuses save_weights_only=False for a model ck.load cannot rebuild."""
        if self.save_weights_only:
            return True
        try:
            _check_subclasses(model)
        except TypeError as e:
            if self.save_weights_only is None:
                return True
            raise TypeError(f"ModelCheckpoint: save_weights_only=False needs a model ck.load can rebuild; {e}; "
                            f"or pass save_weights_only=True") from None
        return False

    def on_fit_start(self, trainer):
        self._weights_only(trainer.model)     # a model that cannot be saved whole is refused before training

    def _path(self, logs):
        try:
            return self.filepath.format(**logs)
        except KeyError as e:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} names {e.args[0]!r}, which is not "
                             f"logged; logged: {sorted(logs)}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} cannot be filled from the epoch's logs "
                             f"({e})") from None

    def _save(self, model, path):
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self._weights_only(model):
            export_torch_state_dict(model, path)
        else:
            model.save(path)

    def on_epoch_end(self, trainer, epoch, logs):
        if self.save_best_only or self.monitor in logs:
            v = _monitored("ModelCheckpoint", self.monitor, logs)
        else:
            v = None                 # saving every epoch: the monitor only tracks the best when it is logged
        path = self._path(logs)
        improved = v is not None and _improves(v, self.best, self.mode)
        if self.save_best_only and not improved:
            if self.verbose:
                best = "nothing yet" if self.best is None else f"{self.best:.5g}"
                print(f"epoch {epoch + 1}: {self.monitor} {v:.5g} did not improve on {best}", flush=True)
            return
        self._save(trainer.model, path)
        if improved:
            if self.verbose:
                was = "" if self.best is None else f" from {self.best:.5g}"
                print(f"epoch {epoch + 1}: {self.monitor} improved{was} to {v:.5g}, saved the model to {path}",
                      flush=True)
            self.best, self.best_epoch, self.best_path = v, epoch + 1, path
        elif self.verbose:
            print(f"epoch {epoch + 1}: saved the model to {path}", flush=True)

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "best_path": self.best_path}

    def load_state_dict(self, s):
        self.best, self.best_epoch, self.best_path = s["best"], s["best_epoch"], s["best_path"]


class BestCheckpoint(ModelCheckpoint):
    """What fit(run_dir=...) keeps as best.safetensors: the epoch with the best val_acc, or the best val_loss
    when the task has no accuracy (the scores are not (N, C) class scores for integer labels); train_acc /
    train_loss when fit has no validation data. The choice is made at the first epoch end."""

    def __init__(self, path):
        super().__init__(path.replace("{", "{{").replace("}", "}}"))   # a folder name is no format string
        self.path = path
        self._chosen = False

    def on_epoch_end(self, trainer, epoch, logs):
        if not self._chosen:
            split = "val" if "val_loss" in logs else "train"
            self.monitor = f"{split}_acc" if trainer.has_accuracy else f"{split}_loss"
            self.mode = _monitor_mode("ModelCheckpoint", self.monitor, "auto")
            self._chosen = True
        super().on_epoch_end(trainer, epoch, logs)

    def state_dict(self):
        return {**super().state_dict(), "monitor": self.monitor if self._chosen else None}

    def load_state_dict(self, s):
        super().load_state_dict(s)
        if s.get("monitor"):
            self.monitor, self._chosen = s["monitor"], True
            self.mode = _monitor_mode("ModelCheckpoint", self.monitor, "auto")


class WeightAverage(Callback):
    """Base of the averaged copies of the weights. ``with avg.applied(model):`` swaps the average in
    (for evaluation) and puts the raw weights back afterwards, so training is never disturbed."""

    def __init__(self):
        self.avg = None
        self.count = 0

    def _accumulate_mean(self, model):
        """avg += (w - avg) / count after counting this snapshot: the equal average of all snapshots."""
        self.count += 1
        if self.avg is None:
            self.avg = {n: p.data.astype(np.float64) for n, p in model.named_parameters()}
            return
        for n, p in model.named_parameters():
            a = self.avg[n] = _like(self.avg[n], p.data)
            a += (p.data - a) / self.count

    @contextlib.contextmanager
    def applied(self, model):
        if self.avg is None:
            raise ValueError(f"{type(self).__name__}: no average yet (nothing has been trained)")
        raw = _weights(model)
        _set_weights(model, {n: a.astype(raw[n].dtype) for n, a in self.avg.items()})
        try:
            yield model
        finally:
            _set_weights(model, raw)

    def state_dict(self):
        return {"count": self.count, **({"avg": self.avg} if self.avg is not None else {})}

    def load_state_dict(self, s):
        self.count = s["count"]
        self.avg = s.get("avg")


class EMA(WeightAverage):
    """Exponential moving average of the weights after every step: avg = d * avg + (1 - d) * w, kept in
    float64. With warmup (the default), d = min(decay, (1 + t) / (10 + t)) at update t, as TensorFlow's
    ExponentialMovingAverage(num_updates): without it the average starts from the first weights and, at
    decay 0.99, still holds 5% of them after 300 steps, which made it worse than the raw weights."""

    def __init__(self, decay=0.999, warmup=True):
        super().__init__()
        decay = check_float("EMA", "decay", decay)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA: decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = _flag("EMA", "warmup", warmup)

    def current_decay(self):
        """The decay of the next update."""
        return min(self.decay, (1 + self.count) / (10 + self.count)) if self.warmup else self.decay

    def on_step_end(self, trainer, step, loss):
        if self.avg is None:
            self.count += 1
            self.avg = {n: p.data.astype(np.float64) for n, p in trainer.model.named_parameters()}
            return
        d = self.current_decay()
        self.count += 1
        for n, p in trainer.model.named_parameters():
            a = self.avg[n] = _like(self.avg[n], p.data)
            a *= d
            a += (1.0 - d) * p.data


class Polyak(WeightAverage):
    """Polyak averaging: the plain running mean of the weights after every step from `start_step` on."""

    def __init__(self, start_step=0):
        super().__init__()
        self.start_step = _int("Polyak", "start_step", start_step, minimum=0)

    def on_step_end(self, trainer, step, loss):
        if step >= self.start_step:
            self._accumulate_mean(trainer.model)


class SWA(WeightAverage):
    """Stochastic weight averaging (Izmailov et al. 2018): equal average of the weights at the end of each
    epoch from `start_epoch` (1-based) on. ``finalize(trainer, data)`` recomputes BatchNorm running
    statistics for the averaged weights with one pass over `data` (the averaged weights never saw them)."""

    def __init__(self, start_epoch=1):
        super().__init__()
        self.start_epoch = _int("SWA", "start_epoch", start_epoch, minimum=1)
        self.bn_state = None

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch + 1 >= self.start_epoch:
            self._accumulate_mean(trainer.model)

    def finalize(self, trainer, data, batch_size=256):
        """Recompute BatchNorm running statistics under the averaged weights (kept for applied())."""
        from ..layers import BatchNorm1d, BatchNorm2d
        model = trainer.model
        bns = [l for _, l in model.named_layers() if isinstance(l, (BatchNorm1d, BatchNorm2d))]
        if not bns:
            return
        saved = {id(l): {k: v.copy() for k, v in l._buffers.items()} for l in bns}
        moms = {id(l): l.momentum for l in bns}
        with self.applied(model):
            for l in bns:
                l._buffers["running_mean"][...] = 0
                l._buffers["running_var"][...] = 1
                l.momentum = None  # cumulative average, as torch's update_bn
                if "num_batches_tracked" in l._buffers:
                    l._buffers["num_batches_tracked"][...] = 0
            rng = model.rng_state()
            model.train()
            for x, y in as_loader(data, batch_size, device=model.device):
                model(trainer.to_device(x, y)[0])
            model.set_rng_state(rng)
            self.bn_state = {id(l): {k: v.copy() for k, v in l._buffers.items()} for l in bns}
        for l in bns:
            l.momentum = moms[id(l)]
            for k, v in saved[id(l)].items():
                l._buffers[k][...] = v

    @contextlib.contextmanager
    def applied(self, model):
        with super().applied(model):
            if not self.bn_state:
                yield model
                return
            from ..layers import BatchNorm1d, BatchNorm2d
            bns = [l for _, l in model.named_layers() if isinstance(l, (BatchNorm1d, BatchNorm2d))]
            raw = {id(l): {k: v.copy() for k, v in l._buffers.items()} for l in bns}
            for l in bns:
                for k, v in self.bn_state.get(id(l), {}).items():
                    l._buffers[k][...] = v
            try:
                yield model
            finally:
                for l in bns:
                    for k, v in raw[id(l)].items():
                        l._buffers[k][...] = v


class SnapshotSaver(Callback):
    """Snapshot ensembles (Huang et al. 2017, "train 1, get M for free"): save the model at the end of every
    cycle of a cosine-with-restarts or cyclic schedule, detected as the learning rate jumping back up.
    ``SnapshotEnsemble.from_dir(folder)`` averages the saved snapshots. With `every_epochs`, it saves
    every that many epochs instead."""

    def __init__(self, folder, every_epochs=None):
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"SnapshotSaver: folder must be a path (str or os.PathLike), got {type(folder).__name__}")
        self.folder = os.fspath(folder)
        self.every_epochs = None if every_epochs is None else _int("SnapshotSaver", "every_epochs", every_epochs,
                                                                   minimum=1)
        self.saved = []
        self._last_lr = None

    def _save(self, trainer, tag):
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"snapshot-{len(self.saved):03d}-{tag}.safetensors")
        trainer.model.save(path)
        self.saved.append(path)

    def on_step_end(self, trainer, step, loss):
        if self.every_epochs:
            return
        lr = trainer.lr
        if self._last_lr is not None and lr > self._last_lr * (1 + 1e-9):
            self._save(trainer, f"step{step:07d}")
        self._last_lr = lr

    def on_epoch_end(self, trainer, epoch, logs):
        if self.every_epochs:
            if (epoch + 1) % self.every_epochs == 0:
                self._save(trainer, f"epoch{epoch + 1:04d}")
            return
        # an epoch-interval schedule has just been stepped: a restart shows here
        lr = trainer.lr
        if trainer.schedule_interval == "epoch" and self._last_lr is not None and lr > self._last_lr * (1 + 1e-9):
            self._save(trainer, f"epoch{epoch + 1:04d}")
        self._last_lr = lr

    def state_dict(self):
        return {"saved": list(self.saved), "last_lr": self._last_lr}

    def load_state_dict(self, s):
        self.saved, self._last_lr = list(s["saved"]), s["last_lr"]
