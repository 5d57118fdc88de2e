"""Step-based schedules, each a closed form of the step counter: constant, step, multi-step, exponential,
inverse time / sqrt, polynomial, cosine (with warm restarts), cyclic and one-cycle."""
import bisect
import math

from .._validate import check_bounded, check_count, check_flag
from .base import Schedule, _check_cycle_momentum, _choice, _per_group


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
        self.step_size = check_count(self._name, "step_size", step_size, 1)
        self.gamma = check_bounded(self._name, "gamma", gamma, 0.0)

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
        ms = [check_count(self._name, "milestones", m, 0) for m in milestones]
        if ms != sorted(ms):
            raise ValueError(f"{self._name}: milestones must be increasing, got {ms}")
        self.milestones = ms
        self.gamma = check_bounded(self._name, "gamma", gamma, 0.0)

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
        self.gamma = check_bounded(self._name, "gamma", gamma, 0.0)

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
        self.k = check_bounded(self._name, "k", k, 0.0)

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
        self.tau = check_bounded(self._name, "tau", tau, 0.0, lo_open=True)

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
        self.total_steps = check_count(self._name, "total_steps", total_steps, 1)

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
        self.total_iters = check_count(self._name, "total_iters", total_iters, 1)
        self.power = check_bounded(self._name, "power", power, 0.0)

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
        self.T_max = check_count(self._name, "T_max", T_max, 1)
        self.eta_min = check_bounded(self._name, "eta_min", eta_min, 0.0)

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
        self.T_0 = check_count(self._name, "T_0", T_0, 1)
        self.T_mult = check_count(self._name, "T_mult", T_mult, 1)
        self.eta_min = check_bounded(self._name, "eta_min", eta_min, 0.0)

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
        self.step_size_up = check_count(op, "step_size_up", step_size_up, 1)
        self.step_size_down = None if step_size_down is None else check_count(op, "step_size_down", step_size_down, 1)
        up = float(self.step_size_up)
        down = up if step_size_down is None else float(self.step_size_down)
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode = _choice(op, "mode", mode, self._MODES)
        self.gamma = check_bounded(op, "gamma", gamma, 0.0)
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
        per_epoch = check_count(op, "epochs", epochs, 1) * check_count(op, "steps_per_epoch", steps_per_epoch, 1)
    if total_steps is None:
        if per_epoch is None:
            raise ValueError(f"{op}: the schedule's length is required: pass total_steps, or epochs and "
                             f"steps_per_epoch")
        return per_epoch
    total_steps = check_count(op, "total_steps", total_steps, 1)
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
        self.total_steps = check_count(op, "total_steps", total_steps, 1)
        self.pct_start = check_bounded(op, "pct_start", pct_start, 0.0, hi=1.0)
        self.anneal_strategy = _choice(op, "anneal_strategy", anneal_strategy, ("cos", "linear"))
        self.div_factor = check_bounded(op, "div_factor", div_factor, 0.0, lo_open=True)
        self.final_div_factor = check_bounded(op, "final_div_factor", final_div_factor, 0.0, lo_open=True)
        self.initial_lrs = [m / self.div_factor for m in self.max_lrs]
        self.min_lrs = [lr0 / self.final_div_factor for lr0 in self.initial_lrs]
        self.base_lrs = list(self.initial_lrs)
        self.cycle_momentum = _check_cycle_momentum(op, self.optimizer, cycle_momentum)
        self.base_momentums = _per_group(op, "base_momentum", base_momentums, n)
        self.max_momentums = _per_group(op, "max_momentum", max_momentums, n)
        self.three_phase = check_flag(op, "three_phase", three_phase)
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
