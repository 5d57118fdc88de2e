"""ReduceOnPlateau: lower the lr when a metric stops improving (torch's ReduceLROnPlateau)."""
import copy
import math
import numbers

from .._validate import check_bounded, check_count
from .base import _check_keys, _choice, _per_group, _plain


class ReduceOnPlateau:
    """Divide the lr by 1/factor when a metric has stopped improving for `patience` epochs (torch
    ReduceLROnPlateau, same arguments and rules). Call ``step(metric)`` once per epoch.

    A scalar min_lr also bounds param groups added to the optimizer later; with a list, set ``.min_lrs`` to
    one value per group after adding one (the next reduction raises ValueError until then, as torch does)."""
    _name = "ReduceOnPlateau"
    _hparams = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs",
                "default_min_lr", "eps")
    _counters = ("t", "best", "num_bad_epochs", "cooldown_counter")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        if not isinstance(getattr(optimizer, "param_groups", None), list):
            raise TypeError(f"{self._name}: optimizer must be a cnnkit optimizer (with param_groups), got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self._configure(mode, factor, patience, threshold, threshold_mode, cooldown, min_lr,
                        None if isinstance(min_lr, (list, tuple)) else min_lr, eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.t = 0

    def _configure(self, mode, factor, patience, threshold, threshold_mode, cooldown, min_lrs, default_min_lr,
                   eps):
        op = self._name
        self.mode = _choice(op, "mode", mode, ("min", "max"))
        self.threshold_mode = _choice(op, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.factor = check_bounded(op, "factor", factor, 0.0, hi=1.0, hi_open=True)
        self.patience = check_count(op, "patience", patience, 0)
        self.threshold = check_bounded(op, "threshold", threshold, 0.0)
        self.cooldown = check_count(op, "cooldown", cooldown, 0)
        # a scalar min_lr (default_min_lr) also bounds param groups added to the optimizer later
        self.default_min_lr = None if default_min_lr is None else check_bounded(op, "min_lr", default_min_lr, 0.0)
        n = len(self.optimizer.param_groups)
        if isinstance(min_lrs, (list, tuple)) and self.default_min_lr is None:
            self.min_lrs = _per_group(op, "min_lr", min_lrs, n)
        elif isinstance(min_lrs, (list, tuple)):
            self.min_lrs = _per_group(op, "min_lr", min_lrs, len(min_lrs))
            self._check_min_lrs()
        else:
            self.min_lrs = _per_group(op, "min_lr", min_lrs, n)
        self.eps = check_bounded(op, "eps", eps, 0.0)

    def _is_better(self, a, best):
        if self.mode == "min":
            return a < best * (1.0 - self.threshold) if self.threshold_mode == "rel" else a < best - self.threshold
        return a > best * (self.threshold + 1.0) if self.threshold_mode == "rel" else a > best + self.threshold

    def step(self, metric):
        current = float(metric)
        self.t += 1
        if self._is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._check_min_lrs()
            for i, g in enumerate(self.optimizer.param_groups):
                old = float(g["lr"])
                new = max(old * self.factor, self.min_lrs[i])
                if old - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.get_last_lr()

    def _check_min_lrs(self):
        """One min_lr per param group, before any lr changes: a scalar min_lr extends to groups added since."""
        n = len(self.optimizer.param_groups)
        if len(self.min_lrs) == n:
            return
        if self.default_min_lr is None:
            raise ValueError(f"{self._name}.step: min_lr has {len(self.min_lrs)} value(s) but the optimizer now has "
                             f"{n} param groups (one was added after this schedule was made); set .min_lrs to a "
                             f"list of {n} values")
        self.min_lrs = [self.default_min_lr] * n

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        """Every hyperparameter and counter, as plain data (JSON-ready; best may be +-inf)."""
        sd = {"schedule": self._name}
        sd.update({k: _plain(getattr(self, k)) for k in self._hparams + self._counters})
        return sd

    def load_state_dict(self, sd):
        """Restore hyperparameters and counters, all validated first (nothing changes on an error)."""
        op = f"{self._name}.load_state_dict"
        _check_keys(op, sd, self._name, self._hparams + self._counters)
        new = copy.copy(self)
        new._configure(**{k: sd[k] for k in self._hparams})
        new.t = check_count(op, "t", sd["t"], 0)
        best = sd["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real) or math.isnan(best):
            raise ValueError(f"{op}: best must be a number, got {best!r}")
        new.best = float(best)
        new.num_bad_epochs = check_count(op, "num_bad_epochs", sd["num_bad_epochs"], 0)
        new.cooldown_counter = check_count(op, "cooldown_counter", sd["cooldown_counter"], 0)
        self.__dict__.update(new.__dict__)
