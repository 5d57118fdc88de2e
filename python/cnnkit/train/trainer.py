"""ck.Trainer: fit, evaluate and predict, with the lecture's babysitting built in.

One training step is: zero the gradients, forward, data loss (+ regularisation penalties), backward
(skipping every gradient nothing needs), optimizer step (which checks the gradients are finite first and
skips or raises by its ``nonfinite`` policy), then per-iteration schedules. The trainer records a History,
shows a progress bar (one line per epoch when output is not a terminal), can stop early when the loss passes
``quit_factor`` times its initial value (CS231n's quit-early rule; off unless set), writes checkpoints that
resume bit for bit, and writes its run folder (history, plots, the best epoch's weights).

Trainer's public methods are defined here; its private parts come from mixins: _step.py (what one optimizer
step books), _progress.py (step records, progress output, the quit-early rule), _loop.py (fit's epoch loop),
_resume.py (load_checkpoint's all-or-nothing restore). _checks.py holds the argument checks.
"""
import contextlib
import copy
import math
import os
import sys

import numpy as np

from .._validate import check_flag as _flag, check_int as _int
from ..autograd import as_array, no_grad
from .._xp import array_module, is_device_array
from ..data.loader import as_loader
from .. import distributed as dist
from . import checkpoint as ckpt
from .callbacks import BestCheckpoint
from ._checks import check_fit_args, check_trainer_args, resolve_loss
from ._loop import LoopMixin
from ._progress import ProgressMixin
from ._resume import ResumeMixin
from ._step import StepMixin
from .history import History

__all__ = ["Trainer", "resolve_loss"]


class Trainer(StepMixin, ProgressMixin, LoopMixin, ResumeMixin):
    """Trains `model` with `optimizer` on `loss` (a callable ``loss(scores, y) -> (value, dscores)`` or one
    of "softmax_cross_entropy", "svm", "mse").

    schedule: a ck.schedules schedule, stepped once per epoch (``schedule_interval="epoch"``, the PyTorch
    convention) or once per iteration ("step"); ReduceOnPlateau is stepped with the validation loss.
    regularizers: ck.regularizers objects; their penalty is added to the reported loss and their gradient
    to the parameter gradients. callbacks: ck.train callbacks (EarlyStopping, averaging, snapshots...).
    quit_factor: stop when the loss passes this multiple of its initial value (None, the default, disables it;
    ck.search's trials use 3, the lecture's rule: a trial that explodes is not worth finishing, while a long run
    may well recover from a spike).
    ratio_every: record each layer's update/weight ratio every this many iterations (0 disables it).
    progress: True (tqdm bar on a terminal, one line per ``log_every`` iterations otherwise), or False.
    nonfinite: "skip" or "raise" sets the optimizer's policy for non-finite gradients (checked before any
    parameter changes; a skipped step leaves parameters and state bit-unchanged and is counted). A step whose
    loss is not finite (on the CPU) is skipped or raised the same way before the optimizer sees it. Skipped
    steps are counted in ``history.skipped_steps``, in each epoch's ``skipped_steps`` and in the progress
    output; the run goes on. Only the quit-early rule (when quit_factor is set) ends it: the loss passing
    ``quit_factor`` times its first finite value, or a whole epoch's worth of non-finite losses in a row.
    A run stopped inside an epoch (the quit-early rule, a KeyboardInterrupt, a callback's ``stop_training``)
    returns its History with that epoch logged as far as it got (``"partial": True``, ``"steps"``).

    On a GPU (``model.to("cuda")`` before building the optimizer or the trainer): each batch goes to the device
    in one copy (unless the loader already yields device arrays), and nothing is read back inside a step. The
    losses, correct counts and update ratios stay on the device and are read back together every
    ``log_every`` steps (default 25), at the end of an epoch and before a checkpoint; the history, the
    progress bar and the quit-early rule see them then (so a run may go up to ``log_every - 1`` steps past
    the step that trips the rule). Callbacks' ``on_step_end`` get the loss as a 0-d device array there.

    distributed: data-parallel over the ranks of ``ck.distributed.init()`` (called here if it was not): rank
    0's weights are broadcast at the start, each rank trains on its shard of every batch (batch_size per rank),
    gradients are averaged in buckets overlapped with backward, losses and evaluation metrics are reduced over
    the ranks, and only rank 0 prints and writes checkpoints and the run folder. docs/distributed.md.
    """

    def __init__(self, model, optimizer, loss="softmax_cross_entropy", schedule=None, regularizers=(),
                 callbacks=(), schedule_interval="epoch", quit_factor=None, ratio_every=50, progress=True,
                 log_every=None, nonfinite=None, distributed=False):
        loss, quit_factor, ratio_every, progress, log_every = check_trainer_args(
            model, optimizer, loss, schedule, regularizers, callbacks, schedule_interval, quit_factor, ratio_every,
            progress, log_every, nonfinite)
        if nonfinite is not None:
            optimizer.nonfinite = nonfinite  # the optimizer checks every gradient before it changes anything
        if not isinstance(distributed, bool):
            raise TypeError(f"Trainer: distributed must be True or False, got {type(distributed).__name__}")
        if distributed and not dist.is_initialized():
            dist.init()
        self._dist = dist.DataParallel(model, optimizer) if distributed else None
        if self._dist is not None and not self._dist.is_main:
            progress = False     # rank 0 alone prints
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
        self.has_accuracy = False    # whether a step or evaluation has scored (N, C) scores against class labels
        self.best_checkpoint = None  # fit(run_dir=...)'s BestCheckpoint: best.safetensors' monitor and epoch
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

    @property
    def _world(self):
        return 1 if self._dist is None else self._dist.size

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

    def _correct(self, scores, y):
        """Number of rows whose argmax is the label: an int, or a 0-d device array when the scores are on a GPU."""
        dtype = y.dtype if hasattr(y, "dtype") else np.asarray(y).dtype
        if scores.ndim != 2 or not np.issubdtype(dtype, np.integer):
            return 0
        self.has_accuracy = True
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
        if self._dist is not None:
            self._dist.start()     # once: rank 0's weights on every rank
        self._step_skipped = False
        model.train()
        opt.zero_grad()
        scores = as_array(model(x))   # a ck.Module returns a Tensor; its call is kept for model.backward
        loss, dscores = self._data_loss(scores, y)
        if self.regularizers:
            params = self._params()
            loss += sum(r.loss(params) for r in self.regularizers)
            for r in self.regularizers:
                r.add_grad(params)
        correct = self._correct(scores, y)
        if self._dist is not None:   # every rank sees the same loss, so all skip a non-finite step together
            loss, correct, _ = self._dist.step_sums(loss, correct, len(y))
        host = self._xp() is np     # the optimizer's skip counter is a plain int: read it every step
        if not is_device_array(loss) and not math.isfinite(loss):
            if opt.nonfinite == "raise":
                raise FloatingPointError(
                    f"Trainer: the loss is {loss} at iteration {self.step + 1} (nonfinite='raise'); look for Inf "
                    f"or NaN in the data or lower the learning rate (nonfinite='skip' skips such steps)")
            self._count_skips(1)
            self._step_skipped = True
            self._schedule_step()
            return loss, correct
        if self._dist is None:
            model.backward(dscores, need_dx=False)
        else:
            with self._dist.reducer.overlap():
                model.backward(dscores, need_dx=False)
            self._dist.reducer.finish()
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
        return loss, correct

    # ------------------------------------------------------------ evaluation
    def evaluate(self, data, batch_size=256):
        """Mean loss (data loss, no penalties) and accuracy over `data`, in eval mode. -> dict(loss, acc)."""
        if data is None:
            raise TypeError("evaluate: data must be a DataLoader, an (x, y) pair of arrays or a dataset, got None")
        loader = as_loader(data, batch_size, False, 0, device=self.model.device)
        if self._dist is not None and loader.sampler is None:
            dist.shard_loader(loader, pad=False)   # every sample once; the sums are reduced below
        was_training = self.model.training
        self.model.eval()
        total, correct, n = 0.0, 0, 0
        try:
            for x, y in loader:
                x, y = self.to_device(x, y)
                with no_grad():          # a ck.Module records nothing for a backward that never comes
                    scores = as_array(self.model(x))
                loss, _ = self._data_loss(scores, y)
                if is_device_array(loss):              # device sums stay there until the end, in float64
                    loss = loss.astype(np.float64)
                total = total + loss * len(y)
                correct = correct + self._correct(scores, y)
                n += len(y)
        finally:
            self.model.train(was_training)
        total, correct = float(total), int(correct)
        if self._dist is not None:
            total, correct, n = self._dist.eval_sums(total, correct, n)
        return {"loss": total / max(n, 1), "acc": correct / max(n, 1)}

    def predict(self, x, batch_size=256):
        """Model outputs (scores) for inputs x, in eval mode, batch by batch."""
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                outs = [as_array(self.model(self.to_device(np.ascontiguousarray(x[i:i + batch_size]), None)[0]))
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
            "world_size": self._world,
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
        if self._dist is not None and not self._dist.is_main:
            return None          # rank 0 writes; the others hold the same state
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
        if self._dist is not None:   # another rank count: the same samples done, the rest in another order
            state["loader"] = dist.rescale_position(state["loader"], state.get("world_size", 1), self._world)
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

    # ------------------------------------------------------------ fit
    def fit(self, train, val=None, epochs=1, batch_size=64, shuffle=True, seed=0, transform=None,
            checkpoint_dir=None, checkpoint_every=1, checkpoint_every_steps=None, resume=None, run_dir=None,
            plots=True, keep_best=True):
        """Train for `epochs` epochs (counting from 0; a resumed run continues to the same total).

        train / val: a DataLoader, an (x, y) pair, a dataset, or a torch DataLoader yielding (x, y) torch
        tensors or numpy arrays (ck.data.TorchLoader: contiguous float32 CPU tensors are used without a copy;
        torch is not imported by cnnkit). A pair or dataset is wrapped in a DataLoader with `batch_size`,
        `shuffle` (True here, as in Keras's fit; the DataLoader's own default is torch's False), `seed` and
        `transform`. Resume through a torch DataLoader restores everything but the loader's randomness: it is
        bit-exact when that loader repeats its batches (no shuffle, or a DistributedSampler, which fit tells
        each epoch) and its transforms draw no random numbers (see TorchLoader).
        checkpoint_dir: write a checkpoint every `checkpoint_every` epochs and/or every `checkpoint_every_steps`
        iterations (0 or None: not by that count). resume: a checkpoint folder or file to continue from
        (bit-exact on the same machine and thread count, from a mid-epoch checkpoint and now also at epoch
        ends: a per-step checkpoint taken at an epoch's last step continues with that epoch's end-of-epoch
        work). run_dir: where history.json, the CSVs and the plots go at the end; with keep_best (the default),
        run_dir/best.safetensors also holds the model of the best epoch so far (callbacks.BestCheckpoint: by
        val_acc, or val_loss when there is no accuracy; ``trainer.best_checkpoint.best_epoch`` says which).
        Returns the History.
        """
        check_fit_args(train, val, epochs, batch_size, shuffle, seed, transform, run_dir, plots)
        for name, v in (("checkpoint_every", checkpoint_every), ("checkpoint_every_steps", checkpoint_every_steps)):
            if v is not None:
                _int("fit", name, v, minimum=0)    # 0 and None: no checkpoints by this count
        _flag("fit", "keep_best", keep_best)
        loader = as_loader(train, batch_size, shuffle, seed, transform, device=self.model.device)
        val_loader = as_loader(val, 256, False, 0, device=self.model.device)
        main = self._dist is None or self._dist.is_main
        if self._dist is not None:
            dist.shard_loader(loader)
            if val_loader is not None:
                dist.shard_loader(val_loader, pad=False)
        self.run_dir = run_dir
        best = self._best_checkpoint(run_dir) if run_dir and keep_best and main else None   # rank 0 writes
        if best is not None:
            self.callbacks.append(best)    # last, in checkpoints too: a resume with run_dir restores its best
        try:
            return self._fit(loader, val_loader, epochs, checkpoint_dir, checkpoint_every, checkpoint_every_steps,
                             resume, run_dir, plots)
        finally:
            if best is not None:
                self.callbacks.remove(best)

    def _best_checkpoint(self, run_dir):
        """The BestCheckpoint writing run_dir/best.safetensors: the one of an earlier fit into the same folder,
        so that a later fit keeps the best of both, or a new one."""
        path = os.path.join(os.fspath(run_dir), "best.safetensors")
        if self.best_checkpoint is None or self.best_checkpoint.path != path:
            self.best_checkpoint = BestCheckpoint(path)
        return self.best_checkpoint

    def _fit(self, loader, val_loader, epochs, checkpoint_dir, checkpoint_every, checkpoint_every_steps, resume,
             run_dir, plots):
        main = self._dist is None or self._dist.is_main
        if checkpoint_dir and main:
            ckpt.clean_stale_temporaries(checkpoint_dir)
        if resume is not None:
            folder = os.fspath(resume) if os.path.isdir(resume) else os.path.dirname(os.fspath(resume))
            if main:
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
        guard = contextlib.nullcontext() if self._dist is None else self._dist.guard()
        try:
            with guard:   # distributed: an error on one rank aborts all, instead of leaving them waiting
                self._epochs(loader, val_loader, epochs, checkpoint_dir, checkpoint_every, checkpoint_every_steps,
                             tty, log_every, sync_every, steps_per_epoch)
        except KeyboardInterrupt:
            self._interrupted()
        self._emit("on_fit_end")
        if run_dir and main:
            self.write_run(run_dir, plots=plots)
        return self.history

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
