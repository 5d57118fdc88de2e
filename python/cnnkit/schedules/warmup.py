"""LinearWarmup: a linear warm-up in front of any step-based schedule."""
import copy

from .._validate import check_bounded, check_count, check_flag
from .base import Schedule, _check_keys
from .lr import Constant
from .plateau import ReduceOnPlateau


def _step_schedule_classes():
    """{name: class} of every step-based schedule (what LinearWarmup may wrap), subclasses included."""
    out, todo = {}, [Schedule]
    while todo:
        c = todo.pop()
        out.setdefault(c._name, c)
        todo.extend(c.__subclasses__())
    return out


class LinearWarmup(Schedule):
    """Linear warm-up wrapping any schedule: for t < warmup_steps, lr = base_lr * (start_factor + (1 -
    start_factor) * t / warmup_steps); from then on the wrapped schedule runs from its own t = 0.
    The wrapped schedule is built unbound (``optimizer=None``); it takes this wrapper's base lrs.

    The state dict holds the wrapped schedule's (``"wrapped"``); loading it rebuilds the wrapped schedule, of
    the class it names, when this one wraps another."""
    _name = "LinearWarmup"
    _hparams = ("warmup_steps", "start_factor")

    def __init__(self, optimizer=None, schedule=None, warmup_steps=5, start_factor=0.01, *, base_lr=None):
        op = self._name
        super().__init__(optimizer, base_lr)
        if schedule is None:
            schedule = Constant()
        if not isinstance(schedule, Schedule) or isinstance(schedule, ReduceOnPlateau):
            raise TypeError(f"{op}: schedule must be a (step-based) Schedule, got {type(schedule).__name__}")
        if schedule.optimizer is not None:
            raise ValueError(f"{op}: build the wrapped schedule with optimizer=None; the wrapper drives the "
                             f"optimizer")
        self._shares_base = schedule.base_lrs is None
        if self._shares_base:
            schedule.base_lrs = self.base_lrs
        self.schedule = schedule
        self._configure(warmup_steps, start_factor)
        self._start()

    def _configure(self, warmup_steps, start_factor):
        op = self._name
        self.warmup_steps = check_count(op, "warmup_steps", warmup_steps, 1)
        # (0, 1] as torch's LinearLR: a warm-up must start from a positive lr
        self.start_factor = check_bounded(op, "start_factor", start_factor, 0.0, lo_open=True, hi=1.0)

    def _lr(self, t, i):
        if t < self.warmup_steps:
            f = self.start_factor + (1.0 - self.start_factor) * t / self.warmup_steps
            return self.base_lrs[i] * f
        return self.schedule._lr(t - self.warmup_steps, i)

    def _momentum(self, t, i):
        return None if t < self.warmup_steps else self.schedule._momentum(t - self.warmup_steps, i)

    def state_dict(self):
        sd = super().state_dict()
        sd["shares_base"] = self._shares_base
        sd["wrapped"] = self.schedule.state_dict()
        if self._shares_base:
            sd["wrapped"]["base_lrs"] = None   # they are this wrapper's
        return sd

    def _loaded(self, sd):
        op = f"{self._name}.load_state_dict"
        _check_keys(op, sd, self._name, ("t", "base_lrs", "shares_base", "wrapped") + self._hparams)
        inner_sd, shares = sd["wrapped"], sd["shares_base"]
        if not isinstance(inner_sd, dict):
            raise TypeError(f"{op}: wrapped must be the wrapped schedule's state dict, got "
                            f"{type(inner_sd).__name__}")
        shares = check_flag(op, "shares_base", shares)
        new = super()._loaded({k: v for k, v in sd.items() if k not in ("shares_base", "wrapped")})
        cls = _step_schedule_classes().get(inner_sd.get("schedule"))
        if cls is None or cls is Schedule or issubclass(cls, ReduceOnPlateau):
            raise ValueError(f"{op}: the wrapped schedule {inner_sd.get('schedule')!r} is not a step-based "
                             f"schedule")
        if type(getattr(self, "schedule", None)) is cls:
            inner = copy.copy(self.schedule)
        else:   # another class: a bare, unbound one of the class named, configured by its state dict
            inner = cls.__new__(cls)
            Schedule.__init__(inner)
        inner_sd = dict(inner_sd)
        if shares:
            inner_sd["base_lrs"] = new.base_lrs
        inner = inner._loaded(inner_sd)
        if shares:
            inner.base_lrs = new.base_lrs
        new.schedule, new._shares_base = inner, shares
        return new
