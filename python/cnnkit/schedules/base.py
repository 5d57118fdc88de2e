"""The Schedule base class (bound or unbound, values, state dicts) and the hyperparameter helpers the
schedules share."""
import copy
import numbers

from .._validate import check_bounded, check_count, check_flag


def _per_group(op, name, v, n):
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ValueError(f"{op}: {name} must have one value per param group ({n}), got {len(v)}")
        return [check_bounded(op, name, x, 0.0) for x in v]
    return [check_bounded(op, name, v, 0.0)] * n


def _choice(op, name, v, choices):
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{op}: {name} must be one of {tuple(choices)}, got {v!r}")
    return v


def _plain(v):
    """A hyperparameter as JSON-ready plain data: tuples become lists, numbers Python ints / floats."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    return float(v)


def _check_keys(op, sd, name, keys):
    """The state dict is a dict for this schedule class with exactly these keys (besides 'schedule')."""
    if not isinstance(sd, dict):
        raise TypeError(f"{op}: state dict must be a dict, got {type(sd).__name__}")
    if sd.get("schedule") != name:
        raise ValueError(f"{op}: state dict is for {sd.get('schedule')!r}, not {name!r}")
    missing, unknown = set(keys) - set(sd), set(sd) - set(keys) - {"schedule"}
    if missing or unknown:
        raise ValueError(f"{op}: state dict keys differ from a {name}'s: missing {sorted(missing)}, "
                         f"unknown {sorted(unknown)}")


def _check_cycle_momentum(op, optimizer, cycle_momentum):
    cycle_momentum = check_flag(op, "cycle_momentum", cycle_momentum)
    if cycle_momentum and optimizer is not None and not all(
            "momentum" in g or "betas" in g for g in optimizer.param_groups):
        raise ValueError(f"{op}: cycle_momentum needs an optimizer with momentum or betas (SGD, RMSProp, Adam); "
                         f"pass cycle_momentum=False")
    return cycle_momentum


class Schedule:
    """Base class. Subclasses define ``_lr(t, i)``: the lr of group i at step t (base lr: ``self.base_lrs[i]``),
    and optionally ``_momentum(t, i)`` (cycled momentum / beta1), returning None when not cycled.

    Hyperparameters are set by ``_configure(**hp)`` (validation and what follows from them), the names in
    ``_hparams``; ``state_dict()`` holds them with the counter and the base lrs, as plain JSON-ready data, and
    ``load_state_dict`` validates and restores every one, as torch's schedulers restore their whole state."""

    _name = "Schedule"
    _hparams = ()

    def __init__(self, optimizer=None, base_lr=None):
        op = self._name
        if optimizer is not None and not isinstance(getattr(optimizer, "param_groups", None), list):
            raise TypeError(f"{op}: optimizer must be a cnnkit optimizer (with param_groups), got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        if optimizer is not None:
            groups = optimizer.param_groups
            self.base_lrs = ([g["lr"] for g in groups] if base_lr is None
                             else _per_group(op, "base_lr", base_lr, len(groups)))
        elif base_lr is not None:
            self.base_lrs = [check_bounded(op, "base_lr", b, 0.0)
                             for b in (base_lr if isinstance(base_lr, (list, tuple)) else [base_lr])]
        else:
            self.base_lrs = None  # set later by a wrapper (LinearWarmup)
        self.t = 0

    def _configure(self):
        pass

    def _start(self):
        if self.optimizer is not None:
            self._apply()

    # -- the schedule

    def _lr(self, t, i):
        raise NotImplementedError

    def _momentum(self, t, i):
        return None

    def lr_at(self, t, group=0):
        """The lr of param group `group` at step t."""
        return self._lr(check_count(self._name, "t", t, 0), group)

    def values(self, n, group=0):
        """The first n learning rates (t = 0 .. n-1) of one group, for plotting."""
        return [self._lr(t, group) for t in range(check_count(self._name, "n", n, 0))]

    def get_last_lr(self):
        return [self._lr(self.t, i) for i in range(len(self.base_lrs))]

    # -- driving an optimizer

    def _apply(self):
        for i, g in enumerate(self.optimizer.param_groups):
            g["lr"] = self._lr(self.t, i)
            m = self._momentum(self.t, i)
            if m is not None:
                if "betas" in g:
                    g["betas"] = (m, *tuple(g["betas"])[1:])
                else:
                    g["momentum"] = m

    def step(self):
        """Advance the counter by one (an iteration or an epoch) and set each group's lr."""
        self.t += 1
        if self.optimizer is not None:
            self._apply()
        return self.get_last_lr()

    # -- state dicts

    def state_dict(self):
        """The class name, the counter t, the base lrs and every hyperparameter, as plain data (JSON-ready)."""
        sd = {"schedule": self._name, "t": self.t,
              "base_lrs": None if self.base_lrs is None else _plain(self.base_lrs)}
        sd.update({k: _plain(getattr(self, k)) for k in self._hparams})
        return sd

    def _loaded(self, sd):
        """A copy of this schedule configured from the state dict; raises before anything here changes."""
        op = f"{self._name}.load_state_dict"
        _check_keys(op, sd, self._name, ("t", "base_lrs") + self._hparams)
        new = copy.copy(self)
        b = sd["base_lrs"]
        if not isinstance(b, (list, tuple)) or not b:
            raise ValueError(f"{op}: base_lrs must be a non-empty list, got {b!r}")
        if self.optimizer is not None and len(b) != len(self.base_lrs):
            raise ValueError(f"{op}: the state dict's base_lrs has {len(b)} value(s), this schedule's optimizer "
                             f"has {len(self.base_lrs)} param groups")
        new.base_lrs = _per_group(op, "base_lrs", list(b), len(b))
        new._configure(**{k: sd[k] for k in self._hparams})
        new.t = check_count(op, "t", sd["t"], 0)
        return new

    def load_state_dict(self, sd):
        """Restore the counter, base lrs and hyperparameters (all validated first; nothing changes on an error).
        The optimizer's lrs are not touched: its own state dict holds them, and the next step() sets them."""
        self.__dict__.update(self._loaded(sd).__dict__)
