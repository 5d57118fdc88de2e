"""Learning-rate schedules (CS231n "annealing the learning rate"; torch.optim.lr_scheduler where it has one).

Every schedule is a closed-form function of a step counter ``t`` (0, 1, 2, ...) and of each param group's
base lr. Bound to an optimizer, construction sets every group's lr to its value at t = 0 and ``step()``
advances t and sets the next value, exactly as torch's schedulers do, so ``step()`` may be called once per
iteration or once per epoch: the counter means whichever you choose. Unbound (``optimizer=None``,
``base_lr=...``) a schedule only computes values: ``values(n)`` lists the first n for plotting.

Where torch has the same schedule the values agree with it (tests/test_schedules.py, 1,000 steps). torch
computes some of them recursively from the previous lr (cosine, polynomial, exponential); cnnkit uses the
closed form, which does not drift, so those agree to rounding (rtol 1e-12), the others exactly.

``state_dict()`` holds a schedule's class name, counter, base lrs and every hyperparameter as plain data (JSON:
checkpoints store it so), and ``load_state_dict`` validates all of it first, then restores it: loading into a
schedule configured differently makes it the saved one, as torch's schedulers do.
"""
import bisect
import copy
import math
import numbers

from numpy import bool_ as np_bool

__all__ = ["Schedule", "Constant", "Step", "MultiStep", "Exponential", "InverseTime", "InverseSqrt",
           "SqrtDecay", "Polynomial", "Cosine", "CosineWarmRestarts", "Cyclic", "OneCycle", "LinearWarmup",
           "ReduceOnPlateau"]


def _num(op, name, v, lo=None, lo_open=False, hi=None, hi_open=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if math.isnan(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or \
            (hi is not None and (v >= hi if hi_open else v > hi)):
        lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
        raise ValueError(f"{op}: invalid {name} {v} (must be {' and '.join(s for s in (lo_s, hi_s) if s)})")
    return v


def _int(op, name, v, lo):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{op}: invalid {name} {v} (must be >= {lo})")
    return int(v)


def _per_group(op, name, v, n):
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ValueError(f"{op}: {name} must have one value per param group ({n}), got {len(v)}")
        return [_num(op, name, x, 0.0) for x in v]
    return [_num(op, name, v, 0.0)] * n


def _bool(op, name, v):
    if not isinstance(v, (bool, np_bool)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(v).__name__}")
    return bool(v)


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
    cycle_momentum = _bool(op, "cycle_momentum", cycle_momentum)
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
            self.base_lrs = [_num(op, "base_lr", b, 0.0) for b in (base_lr if isinstance(base_lr, (list, tuple))
                                                                   else [base_lr])]
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
        return self._lr(_int(self._name, "t", t, 0), group)

    def values(self, n, group=0):
        """The first n learning rates (t = 0 .. n-1) of one group, for plotting."""
        return [self._lr(t, group) for t in range(_int(self._name, "n", n, 0))]

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
        new.t = _int(op, "t", sd["t"], 0)
        return new

    def load_state_dict(self, sd):
        """Restore the counter, base lrs and hyperparameters (all validated first; nothing changes on an error).
        The optimizer's lrs are not touched: its own state dict holds them, and the next step() sets them."""
        self.__dict__.update(self._loaded(sd).__dict__)


class Constant(Schedule):
    """lr = base_lr."""
    _name = "Constant"

    def __init__(self, optimizer=None, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._start()

    def _lr(self, t, i):
        return self.base_lrs[i]


class Step(Schedule):
    """lr = base_lr * gamma ** (t // step_size) (torch StepLR)."""
    _name = "Step"
    _hparams = ("step_size", "gamma")

    def __init__(self, optimizer=None, step_size=30, gamma=0.1, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(step_size, gamma)
        self._start()

    def _configure(self, step_size, gamma):
        self.step_size = _int(self._name, "step_size", step_size, 1)
        self.gamma = _num(self._name, "gamma", gamma, 0.0)

    def _lr(self, t, i):
        return self.base_lrs[i] * self.gamma ** (t // self.step_size)


class MultiStep(Schedule):
    """lr = base_lr * gamma ** (number of milestones <= t) (torch MultiStepLR)."""
    _name = "MultiStep"
    _hparams = ("milestones", "gamma")

    def __init__(self, optimizer=None, milestones=(), gamma=0.1, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(milestones, gamma)
        self._start()

    def _configure(self, milestones, gamma):
        if not isinstance(milestones, (list, tuple, range)):
            raise TypeError(f"{self._name}: milestones must be a list of ints, got {type(milestones).__name__}")
        ms = [_int(self._name, "milestones", m, 0) for m in milestones]
        if ms != sorted(ms):
            raise ValueError(f"{self._name}: milestones must be increasing, got {ms}")
        self.milestones = ms
        self.gamma = _num(self._name, "gamma", gamma, 0.0)

    def _lr(self, t, i):
        return self.base_lrs[i] * self.gamma ** bisect.bisect_right(self.milestones, t)


class Exponential(Schedule):
    """lr = base_lr * gamma ** t (torch ExponentialLR; the lecture's 0.97 per epoch is the default)."""
    _name = "Exponential"
    _hparams = ("gamma",)

    def __init__(self, optimizer=None, gamma=0.97, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(gamma)
        self._start()

    def _configure(self, gamma):
        self.gamma = _num(self._name, "gamma", gamma, 0.0)

    def _lr(self, t, i):
        return self.base_lrs[i] * self.gamma ** t


class InverseTime(Schedule):
    """1/t decay (CS231n): lr = base_lr / (1 + k * t)."""
    _name = "InverseTime"
    _hparams = ("k",)

    def __init__(self, optimizer=None, k=1.0, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(k)
        self._start()

    def _configure(self, k):
        self.k = _num(self._name, "k", k, 0.0)

    def _lr(self, t, i):
        return self.base_lrs[i] / (1 + self.k * t)


class InverseSqrt(Schedule):
    """lr = base_lr / sqrt(1 + t / tau) (the "rsqrt" decay of Transformer training, without its warm-up;
    wrap it in LinearWarmup for that)."""
    _name = "InverseSqrt"
    _hparams = ("tau",)

    def __init__(self, optimizer=None, tau=1.0, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(tau)
        self._start()

    def _configure(self, tau):
        self.tau = _num(self._name, "tau", tau, 0.0, lo_open=True)

    def _lr(self, t, i):
        return self.base_lrs[i] / math.sqrt(1 + t / self.tau)


class SqrtDecay(Schedule):
    """lr = base_lr * sqrt(1 - min(t, T) / T): falls to 0 at t = T and stays there."""
    _name = "SqrtDecay"
    _hparams = ("total_steps",)

    def __init__(self, optimizer=None, total_steps=100, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(total_steps)
        self._start()

    def _configure(self, total_steps):
        self.total_steps = _int(self._name, "total_steps", total_steps, 1)

    def _lr(self, t, i):
        return self.base_lrs[i] * math.sqrt(1.0 - min(t, self.total_steps) / self.total_steps)


class Polynomial(Schedule):
    """lr = base_lr * (1 - min(t, T) / T) ** power (torch PolynomialLR; power=1 is linear decay to 0)."""
    _name = "Polynomial"
    _hparams = ("total_iters", "power")

    def __init__(self, optimizer=None, total_iters=5, power=1.0, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(total_iters, power)
        self._start()

    def _configure(self, total_iters, power):
        self.total_iters = _int(self._name, "total_iters", total_iters, 1)
        self.power = _num(self._name, "power", power, 0.0)

    def _lr(self, t, i):
        return self.base_lrs[i] * (1.0 - min(self.total_iters, t) / self.total_iters) ** self.power


class Cosine(Schedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2 (torch CosineAnnealingLR;
    Loshchilov & Hutter 2017 without restarts)."""
    _name = "Cosine"
    _hparams = ("T_max", "eta_min")

    def __init__(self, optimizer=None, T_max=100, eta_min=0.0, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(T_max, eta_min)
        self._start()

    def _configure(self, T_max, eta_min):
        self.T_max = _int(self._name, "T_max", T_max, 1)
        self.eta_min = _num(self._name, "eta_min", eta_min, 0.0)

    def _lr(self, t, i):
        return self.eta_min + (self.base_lrs[i] - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class CosineWarmRestarts(Schedule):
    """SGDR (Loshchilov & Hutter 2017; torch CosineAnnealingWarmRestarts): cosine from base_lr to eta_min over
    T_i steps, then restart; T_0 is the first period and each next one is T_mult times longer."""
    _name = "CosineWarmRestarts"
    _hparams = ("T_0", "T_mult", "eta_min")

    def __init__(self, optimizer=None, T_0=10, T_mult=1, eta_min=0.0, *, base_lr=None):
        super().__init__(optimizer, base_lr)
        self._configure(T_0, T_mult, eta_min)
        self._start()

    def _configure(self, T_0, T_mult, eta_min):
        self.T_0 = _int(self._name, "T_0", T_0, 1)
        self.T_mult = _int(self._name, "T_mult", T_mult, 1)
        self.eta_min = _num(self._name, "eta_min", eta_min, 0.0)

    def _cycle(self, t):
        """(T_cur, T_i) at step t, in integers, as torch's step() advances them."""
        t_cur, t_i = t, self.T_0
        if self.T_mult == 1:
            return t_cur % t_i, t_i
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= self.T_mult
        return t_cur, t_i

    def _lr(self, t, i):
        t_cur, t_i = self._cycle(t)
        return self.eta_min + (self.base_lrs[i] - self.eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


class Cyclic(Schedule):
    """Cyclical learning rates (Smith 2017; torch CyclicLR): lr goes base_lr -> max_lr over step_size_up steps
    and back over step_size_down; mode "triangular" (constant amplitude), "triangular2" (amplitude halves each
    cycle) or "exp_range" (amplitude * gamma**t). With cycle_momentum, momentum (or Adam's beta1) cycles the
    opposite way between max_momentum and base_momentum."""
    _name = "Cyclic"
    _MODES = ("triangular", "triangular2", "exp_range")
    _hparams = ("max_lrs", "step_size_up", "step_size_down", "mode", "gamma", "cycle_momentum", "base_momentums",
                "max_momentums")

    def __init__(self, optimizer=None, base_lr=1e-3, max_lr=6e-3, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, cycle_momentum=True, base_momentum=0.8, max_momentum=0.9):
        super().__init__(optimizer, base_lr)
        self._configure(max_lr, step_size_up, step_size_down, mode, gamma, cycle_momentum, base_momentum,
                        max_momentum)
        self._start()

    def _configure(self, max_lrs, step_size_up, step_size_down, mode, gamma, cycle_momentum, base_momentums,
                   max_momentums):
        op, n = self._name, len(self.base_lrs)
        self.max_lrs = _per_group(op, "max_lr", max_lrs, n)
        self.step_size_up = _int(op, "step_size_up", step_size_up, 1)
        self.step_size_down = None if step_size_down is None else _int(op, "step_size_down", step_size_down, 1)
        up = float(self.step_size_up)
        down = up if step_size_down is None else float(self.step_size_down)
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode = _choice(op, "mode", mode, self._MODES)
        self.gamma = _num(op, "gamma", gamma, 0.0)
        self.cycle_momentum = _check_cycle_momentum(op, self.optimizer, cycle_momentum)
        self.base_momentums = _per_group(op, "base_momentum", base_momentums, n)
        self.max_momentums = _per_group(op, "max_momentum", max_momentums, n)

    def _phase(self, t):
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle
        scale = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        if self.mode == "triangular":
            amp = 1.0
        elif self.mode == "triangular2":
            amp = 1 / (2.0 ** (cycle - 1))
        else:
            amp = self.gamma ** t
        return scale, amp

    def _lr(self, t, i):
        scale, amp = self._phase(t)
        return self.base_lrs[i] + (self.max_lrs[i] - self.base_lrs[i]) * scale * amp

    def _momentum(self, t, i):
        if not self.cycle_momentum:
            return None
        scale, amp = self._phase(t)
        return self.max_momentums[i] - (self.max_momentums[i] - self.base_momentums[i]) * scale * amp


def _total_steps(op, total_steps, epochs, steps_per_epoch):
    """total_steps, or epochs * steps_per_epoch; neither is an error (a default length would be a silent guess)."""
    per_epoch = None
    if epochs is not None or steps_per_epoch is not None:
        if epochs is None or steps_per_epoch is None:
            raise ValueError(f"{op}: pass total_steps, or both epochs and steps_per_epoch; got only "
                             f"{'epochs' if steps_per_epoch is None else 'steps_per_epoch'}")
        per_epoch = _int(op, "epochs", epochs, 1) * _int(op, "steps_per_epoch", steps_per_epoch, 1)
    if total_steps is None:
        if per_epoch is None:
            raise ValueError(f"{op}: the schedule's length is required: pass total_steps, or epochs and "
                             f"steps_per_epoch")
        return per_epoch
    total_steps = _int(op, "total_steps", total_steps, 1)
    if per_epoch is not None and per_epoch != total_steps:
        raise ValueError(f"{op}: total_steps={total_steps} but epochs * steps_per_epoch = {per_epoch}; pass one "
                         f"or the other")
    return total_steps


class OneCycle(Schedule):
    """1cycle (Smith & Topin 2018; torch OneCycleLR): warm up from max_lr/div_factor to max_lr over pct_start of
    total_steps, then anneal ("cos" or "linear") to max_lr/(div_factor*final_div_factor); three_phase adds a
    symmetric descent before the final annealing. Momentum (or beta1) cycles max -> base -> max.

    The length is ``total_steps``, or ``epochs * steps_per_epoch`` (keywords); one of the two is required, as
    in torch."""
    _name = "OneCycle"
    _hparams = ("max_lrs", "total_steps", "pct_start", "anneal_strategy", "cycle_momentum", "base_momentums",
                "max_momentums", "div_factor", "final_div_factor", "three_phase")

    def __init__(self, optimizer=None, max_lr=0.1, total_steps=None, pct_start=0.3, anneal_strategy="cos",
                 cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, *, epochs=None, steps_per_epoch=None):
        super().__init__(optimizer, max_lr)
        self._configure(max_lr, _total_steps(self._name, total_steps, epochs, steps_per_epoch), pct_start,
                        anneal_strategy, cycle_momentum, base_momentum, max_momentum, div_factor, final_div_factor,
                        three_phase)
        self._start()

    def _configure(self, max_lrs, total_steps, pct_start, anneal_strategy, cycle_momentum, base_momentums,
                   max_momentums, div_factor, final_div_factor, three_phase):
        op, n = self._name, len(self.base_lrs)
        self.max_lrs = _per_group(op, "max_lr", max_lrs, n)
        self.total_steps = _int(op, "total_steps", total_steps, 1)
        self.pct_start = _num(op, "pct_start", pct_start, 0.0, hi=1.0)
        self.anneal_strategy = _choice(op, "anneal_strategy", anneal_strategy, ("cos", "linear"))
        self.div_factor = _num(op, "div_factor", div_factor, 0.0, lo_open=True)
        self.final_div_factor = _num(op, "final_div_factor", final_div_factor, 0.0, lo_open=True)
        self.initial_lrs = [m / self.div_factor for m in self.max_lrs]
        self.min_lrs = [lr0 / self.final_div_factor for lr0 in self.initial_lrs]
        self.base_lrs = list(self.initial_lrs)
        self.cycle_momentum = _check_cycle_momentum(op, self.optimizer, cycle_momentum)
        self.base_momentums = _per_group(op, "base_momentum", base_momentums, n)
        self.max_momentums = _per_group(op, "max_momentum", max_momentums, n)
        self.three_phase = _bool(op, "three_phase", three_phase)
        T, p = self.total_steps, self.pct_start
        # (end_step, start, end) with "i"nitial, "M"ax, "m"in lr, and momentum start/end "M"ax or "b"ase
        if self.three_phase:
            self.phases = [(float(p * T) - 1, "i", "M", "M", "b"), (float(2 * p * T) - 2, "M", "i", "b", "M"),
                           (T - 1, "i", "m", "M", "M")]
        else:
            self.phases = [(float(p * T) - 1, "i", "M", "M", "b"), (T - 1, "M", "m", "b", "M")]

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _where(self, t):
        if t > self.total_steps:
            raise ValueError(f"{self._name}: stepped {t} times, more than total_steps={self.total_steps}")
        start_step = 0.0
        for k, ph in enumerate(self.phases):
            if t <= ph[0] or k == len(self.phases) - 1:
                return ph, (t - start_step) / (ph[0] - start_step)
            start_step = ph[0]

    def _lr(self, t, i):
        ph, pct = self._where(t)
        val = {"i": self.initial_lrs[i], "M": self.max_lrs[i], "m": self.min_lrs[i]}
        return self._anneal(val[ph[1]], val[ph[2]], pct)

    def _momentum(self, t, i):
        if not self.cycle_momentum:
            return None
        ph, pct = self._where(t)
        val = {"M": self.max_momentums[i], "b": self.base_momentums[i]}
        return self._anneal(val[ph[3]], val[ph[4]], pct)


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
        self.warmup_steps = _int(op, "warmup_steps", warmup_steps, 1)
        # (0, 1] as torch's LinearLR: a warm-up must start from a positive lr
        self.start_factor = _num(op, "start_factor", start_factor, 0.0, lo_open=True, hi=1.0)

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
        shares = _bool(op, "shares_base", shares)
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
        self.factor = _num(op, "factor", factor, 0.0, hi=1.0, hi_open=True)
        self.patience = _int(op, "patience", patience, 0)
        self.threshold = _num(op, "threshold", threshold, 0.0)
        self.cooldown = _int(op, "cooldown", cooldown, 0)
        # a scalar min_lr (default_min_lr) also bounds param groups added to the optimizer later
        self.default_min_lr = None if default_min_lr is None else _num(op, "min_lr", default_min_lr, 0.0)
        n = len(self.optimizer.param_groups)
        if isinstance(min_lrs, (list, tuple)) and self.default_min_lr is None:
            self.min_lrs = _per_group(op, "min_lr", min_lrs, n)
        elif isinstance(min_lrs, (list, tuple)):
            self.min_lrs = _per_group(op, "min_lr", min_lrs, len(min_lrs))
            self._check_min_lrs()
        else:
            self.min_lrs = _per_group(op, "min_lr", min_lrs, n)
        self.eps = _num(op, "eps", eps, 0.0)

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
        new.t = _int(op, "t", sd["t"], 0)
        best = sd["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real) or math.isnan(best):
            raise ValueError(f"{op}: best must be a number, got {best!r}")
        new.best = float(best)
        new.num_bad_epochs = _int(op, "num_bad_epochs", sd["num_bad_epochs"], 0)
        new.cooldown_counter = _int(op, "cooldown_counter", sd["cooldown_counter"], 0)
        self.__dict__.update(new.__dict__)
