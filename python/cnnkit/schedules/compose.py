"""torch.optim.lr_scheduler's LinearLR, LambdaLR and SequentialLR, as closed-form schedules like the others."""
from .._validate import check_bounded, check_count
from .base import Schedule, _check_keys
from .plateau import ReduceOnPlateau


class LinearLR(Schedule):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters), as
    torch's LinearLR (defaults 1/3 -> 1 over 5 steps)."""
    _name = "LinearLR"
    _hparams = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer=None, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(start_factor, end_factor, total_iters)
        self._start()

    def _configure(self, start_factor, end_factor, total_iters):
        op = self._name
        # torch: start_factor in (0, 1], end_factor in [0, 1]
        self.start_factor = check_bounded(op, "start_factor", start_factor, 0.0, lo_open=True, hi=1.0)
        self.end_factor = check_bounded(op, "end_factor", end_factor, 0.0, hi=1.0)
        self.total_iters = check_count(op, "total_iters", total_iters, 1)

    def _lr(self, t, i):
        f = self.start_factor + (self.end_factor - self.start_factor) * min(t, self.total_iters) / self.total_iters
        return self.base_lrs[i] * f


class LambdaLR(Schedule):
    """lr = base_lr * lr_lambda(t), as torch's LambdaLR; lr_lambda is a function of the step (or one per param
    group). The function is code, not data: the state dict holds the counter and base lrs only, so build the
    schedule with the same function before loading one (torch's state dict leaves plain functions out too)."""
    _name = "LambdaLR"

    def __init__(self, optimizer=None, lr_lambda=None, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        fns = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * len(self.base_lrs or [0])
        if not fns or not all(callable(f) for f in fns):
            raise TypeError(f"LambdaLR: lr_lambda must be a function of the step (or a list, one per param group), "
                            f"got {type(lr_lambda).__name__}")
        if self.base_lrs is not None and len(fns) != len(self.base_lrs):
            raise ValueError(f"LambdaLR: lr_lambda must have one function per param group ({len(self.base_lrs)}), "
                             f"got {len(fns)}")
        self.lr_lambdas = fns
        self._start()

    def _lr(self, t, i):
        return self.base_lrs[i] * float(self.lr_lambdas[i if len(self.lr_lambdas) > 1 else 0](t))


class SequentialLR(Schedule):
    """Schedules one after another, as torch's SequentialLR: schedule k runs from milestone k-1 (its own t
    restarting at 0) to milestone k. Every schedule takes the base lrs of the first (what torch's initial_lr
    is), and this one drives the optimizer: pass schedules built on the same optimizer, or unbound ones."""
    _name = "SequentialLR"
    _hparams = ("milestones",)

    def __init__(self, optimizer=None, schedulers=(), milestones=(), *, base_lr=None):
        op = self._name
        scheds = list(schedulers) if isinstance(schedulers, (list, tuple)) else None
        if not scheds or not all(isinstance(s, Schedule) and not isinstance(s, ReduceOnPlateau) for s in scheds):
            raise TypeError(f"{op}: schedulers must be a non-empty list of step-based schedules, got {schedulers!r}")
        for s in scheds:
            if s.optimizer is not None and optimizer is not None and s.optimizer is not optimizer:
                raise ValueError(f"{op}: every schedule must be built on this optimizer (or unbound)")
        if base_lr is None and optimizer is not None and scheds[0].base_lrs is not None:
            base_lr = list(scheds[0].base_lrs)   # the lrs before the first schedule changed them
        super().__init__(optimizer, base_lr)
        for s in scheds:
            s.optimizer = None
            s.base_lrs = self.base_lrs
        self.schedulers = scheds
        self._configure(milestones)
        self._start()

    def _configure(self, milestones):
        op = self._name
        if not isinstance(milestones, (list, tuple)):
            raise TypeError(f"{op}: milestones must be a list of steps, got {type(milestones).__name__}")
        ms = [check_count(op, "milestones", m, 1) for m in milestones]
        if len(ms) != len(self.schedulers) - 1:
            raise ValueError(f"{op}: expected {len(self.schedulers) - 1} milestone(s) for {len(self.schedulers)} "
                             f"schedules, got {len(ms)}")
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"{op}: milestones must increase, got {ms}")
        self.milestones = ms

    def _part(self, t):
        k = sum(t >= m for m in self.milestones)
        return self.schedulers[k], t - (self.milestones[k - 1] if k else 0)

    def _lr(self, t, i):
        s, u = self._part(t)
        return s._lr(u, i)

    def _momentum(self, t, i):
        s, u = self._part(t)
        return s._momentum(u, i)

    def state_dict(self):
        sd = super().state_dict()
        sd["schedulers"] = [s.state_dict() for s in self.schedulers]
        for inner in sd["schedulers"]:
            inner["base_lrs"] = None    # they are this schedule's
        return sd

    def _loaded(self, sd):
        op = f"{self._name}.load_state_dict"
        _check_keys(op, sd, self._name, ("t", "base_lrs", "milestones", "schedulers"))
        inner = sd["schedulers"]
        if not isinstance(inner, list) or len(inner) != len(self.schedulers):
            raise ValueError(f"{op}: schedulers must be a list of {len(self.schedulers)} state dicts, got {inner!r}")
        new = super()._loaded({k: v for k, v in sd.items() if k != "schedulers"})
        parts = []
        for s, isd in zip(self.schedulers, inner):
            if not isinstance(isd, dict):
                raise TypeError(f"{op}: each of schedulers must be a state dict, got {type(isd).__name__}")
            part = s._loaded(dict(isd, base_lrs=new.base_lrs))
            part.base_lrs = new.base_lrs
            parts.append(part)
        new.schedulers = parts
        return new


__all__ = ["LinearLR", "LambdaLR", "SequentialLR"]
