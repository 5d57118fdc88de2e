"""Optimizers: torch.optim's update rules, defaults and arithmetic order, each step one fused C++ pass.

Every param group is moved into one contiguous ``FlatBuffer`` (``p.data`` / ``p.grad`` become views), so a
step is: one read-only pass over all flat gradients (finite check + global norm), then one fused kernel pass
per group over flat param/grad/state (csrc/ops/optim.cpp). Per-step scalars (bias corrections, decayed lr)
are computed here exactly as torch/optim/*.py computes them. ``LBFGS`` is numpy, ported from
torch.optim.LBFGS (Nocedal & Wright, Algorithms 7.4 and 3.5/3.6 for the strong-Wolfe line search).

``maximize=True`` ascends, as torch's. Beyond torch: ``nonfinite="skip"|"raise"`` (a non-finite gradient is found before anything changes; a skipped
step leaves params and state bit-identical and counts in ``skipped_steps``), ``l1`` (L1 / elastic net
gradient added in the same pass), ``max_norm`` (max-norm constraint after the step), ``clip_grad_norm`` and
``clip_grad_value`` folded into the step, and ``decay_bias``.

``decay_bias`` defaults to True: weight decay, L1 and max-norm reach every parameter, as in torch.optim, so a
model trained here and in PyTorch with the same hyperparameters gets the same numbers. Set
``decay_bias=False`` (per group or for all) to leave 1-D parameters (biases, batch-norm scales and shifts)
out of weight decay and L1, as CS231n suggests: their few values do not overfit, and decaying a BN scale
fights the normalisation.
"""
import math
import numbers

import numpy as np

from . import _C
from .parameter import FlatBuffer, Parameter

__all__ = ["Optimizer", "SGD", "AdaGrad", "RMSProp", "Adam", "AdamW", "LBFGS", "NonFiniteGradientError",
           "clip_grad_norm_", "clip_grad_value_", "apply_max_norm_"]

_NONFINITE = ("skip", "raise")


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds Inf or NaN and the optimizer's policy is nonfinite="raise"."""


# ---------------------------------------------------------------- validation helpers

def _real(op, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if math.isnan(v):
        raise ValueError(f"{op}: {name} must not be NaN")
    return v


def _nonneg(op, name, v):
    v = _real(op, name, v)
    if v < 0:
        raise ValueError(f"{op}: invalid {name} {v} (must be >= 0)")
    return v


def _unit(op, name, v):
    v = _real(op, name, v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{op}: invalid {name} {v} (must be in [0, 1))")
    return v


def _params_list(op, params):
    if isinstance(params, (Parameter, dict)):
        params = [params]
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{op}: params must be an iterable of Parameters or of param-group dicts, "
                        f"got {type(params).__name__}") from None
    if not params:
        raise ValueError(f"{op}: got an empty parameter list")
    if all(isinstance(p, dict) for p in params):
        return params
    if any(isinstance(p, dict) for p in params):
        raise TypeError(f"{op}: params must be all Parameters or all param-group dicts, not a mix")
    return [{"params": params}]


# ---------------------------------------------------------------- base class

class Optimizer:
    """Base class: param groups, one FlatBuffer per group, the finite check, clipping, state dicts.

    Subclasses define ``defaults``, ``_check(group)`` (hyperparameter validation) and
    ``_update(group, state, flat, lo, hi, wd, l1, gscale, gclip)`` (one fused kernel call on [lo, hi)).
    """

    _name = "Optimizer"

    def __init__(self, params, defaults, *, l1=0.0, max_norm=None, decay_bias=True, maximize=False,
                 nonfinite="skip", clip_grad_norm=None, clip_grad_value=None):
        op = self._name
        if nonfinite not in _NONFINITE:
            raise ValueError(f"{op}: nonfinite must be 'skip' or 'raise', got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.clip_grad_norm = None if clip_grad_norm is None else _positive(op, "clip_grad_norm", clip_grad_norm)
        self.clip_grad_value = (None if clip_grad_value is None
                                else _positive(op, "clip_grad_value", clip_grad_value))
        self.defaults = dict(defaults, l1=l1, max_norm=max_norm, decay_bias=decay_bias, maximize=maximize)
        self.param_groups = []
        self.state = []          # per group: dict of step counters and flat state arrays
        self._flats = []         # per group: FlatBuffer (None when every param is frozen)
        self._seen = set()
        self.skipped_steps = 0
        self.last_grad_norm = None
        for g in _params_list(op, params):
            self.add_param_group(g)

    def add_param_group(self, group):
        op = self._name
        if not isinstance(group, dict):
            raise TypeError(f"{op}: a param group must be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{op}: param group {len(self.param_groups)} has no 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        if not params:
            raise ValueError(f"{op}: param group {len(self.param_groups)} has no params")
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{op}: params must be cnnkit Parameters, got {type(p).__name__}")
            if id(p) in self._seen:
                raise ValueError(f"{op}: {p!r} appears in more than one param group")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{op}: unknown hyperparameters {sorted(unknown)}; expected {sorted(self.defaults)}")
        g = dict(self.defaults)
        g.update({k: v for k, v in group.items() if k != "params"})
        self._check_common(g)
        self._check(g)
        trainable = [p for p in params if p.requires_grad]
        for p in params:
            self._seen.add(id(p))
        # Decayed parameters first, then (decay_bias=False) the 1-D ones: two contiguous ranges of one buffer.
        if not g["decay_bias"]:
            trainable = [p for p in trainable if p.data.ndim > 1] + [p for p in trainable if p.data.ndim <= 1]
        g["params"] = params
        g["_trainable"] = trainable
        g["_n_decayed"] = (sum(p.size for p in trainable) if g["decay_bias"]
                           else sum(p.size for p in trainable if p.data.ndim > 1))
        flat = None
        if trainable:
            if not isinstance(trainable[0].data, np.ndarray):
                raise NotImplementedError(f"{op}: only numpy (CPU) parameters are supported so far")
            flat = FlatBuffer(trainable)
        self.param_groups.append(g)
        self._flats.append(flat)
        self.state.append({})

    def _check_common(self, g):
        op = self._name
        g["lr"] = _nonneg(op, "lr", g["lr"])
        g["weight_decay"] = _nonneg(op, "weight_decay", g["weight_decay"])
        g["l1"] = _nonneg(op, "l1", g["l1"])
        if g["max_norm"] is not None:
            g["max_norm"] = _positive(op, "max_norm", g["max_norm"])
        g["decay_bias"] = bool(g["decay_bias"])
        g["maximize"] = bool(g["maximize"])

    def _check(self, g):
        pass

    # -- the step

    def zero_grad(self):
        """Set every gradient of this optimizer's trainable parameters to zero (one fill per group)."""
        for flat in self._flats:
            if flat is not None:
                flat.zero_grad()

    def _check_bound(self, gi, g, flat):
        """Every trainable p.data / p.grad must still be the view of this group's buffer: if something rebound
        them (another optimizer's FlatBuffer, ``p.data = new_array``), stepping would train a stale copy."""
        for p in g["_trainable"]:
            if p.data.base is not flat.data or p.grad.base is not flat.grad:
                raise ValueError(
                    f"{self._name}.step: {p!r} in param group {gi} no longer lives in this optimizer's flat buffer "
                    f"(its .data or .grad was rebound, e.g. by another optimizer built over the same parameters, "
                    f"or by assigning p.data = ...); write values in place with p.data[...] = x, or build the "
                    f"optimizer again")

    def _grad_check(self):
        """One read-only pass over every flat gradient: (all finite, global L2 norm)."""
        total, finite = 0.0, True
        for flat in self._flats:
            if flat is not None:
                s, f = _C.grad_sumsq(flat.grad)
                total += s
                finite = finite and f
        return finite, math.sqrt(total)

    def _first_nonfinite(self):
        for gi, g in enumerate(self.param_groups):
            for p in g["_trainable"]:
                if not np.all(np.isfinite(p.grad)):
                    return f"{p!r} in param group {gi}"
        return "?"

    def step(self, closure=None):
        """One update of every group. A closure (re-evaluates the loss and gradients) is optional.

        Order: finite check + global grad norm (one pass); then, per group, one fused kernel pass that clips,
        adds weight decay / L1 and applies the rule; then the max-norm projection.
        """
        loss = closure() if closure is not None else None
        for gi, (g, flat) in enumerate(zip(self.param_groups, self._flats)):
            self._check_common(g)
            self._check(g)
            self._check_bound(gi, g, flat)
        finite, norm = self._grad_check()
        self.last_grad_norm = norm
        if not finite:
            if self.nonfinite == "raise":
                raise NonFiniteGradientError(
                    f"{self._name}.step: non-finite gradient (Inf or NaN) in {self._first_nonfinite()}; "
                    f"parameters and optimizer state are unchanged")
            self.skipped_steps += 1
            return loss
        gscale = 1.0
        if self.clip_grad_norm is not None:  # torch.nn.utils.clip_grad_norm_'s coefficient
            gscale = min(self.clip_grad_norm / (norm + 1e-6), 1.0)
        gclip = math.inf if self.clip_grad_value is None else self.clip_grad_value
        for g, st, flat in zip(self.param_groups, self.state, self._flats):
            if flat is None:
                continue
            self._advance(g, st, flat)
            n, nd = flat.size, g["_n_decayed"]
            # maximize: torch negates the gradient first; g * (-s) rounds exactly as -(g * s)
            gs = -gscale if g["maximize"] else gscale
            for lo, hi, wd, l1 in ((0, nd, g["weight_decay"], g["l1"]), (nd, n, 0.0, 0.0)):
                if hi > lo:
                    self._update(g, st, flat, lo, hi, wd, l1, gs, gclip)
            if g["max_norm"] is not None:
                for p in g["_trainable"]:
                    if p.data.ndim > 1:
                        _C.maxnorm_rows(p.data, g["max_norm"])
        return loss

    def _advance(self, g, st, flat):
        """Allocate state on the first step and advance the step counter (once per group and step)."""
        raise NotImplementedError

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip):
        raise NotImplementedError

    # -- state dicts

    def state_dict(self):
        """Hyperparameters, step counters and flat state arrays (copies), and the skip counter.

        Arrays are flat per group, in the group's buffer order; ``load_state_dict`` restores them exactly, so a
        resumed run equals the uninterrupted one bit for bit.
        """
        groups, idx = [], 0
        for g in self.param_groups:
            d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()
                 if k not in ("params", "_trainable", "_n_decayed")}
            d["params"] = list(range(idx, idx + len(g["params"])))
            idx += len(g["params"])
            groups.append(d)
        state = [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items() if not k.startswith("_")}
                 for st in self.state]
        return {"optimizer": self._name, "state": state, "param_groups": groups,
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, sd):
        op = f"{self._name}.load_state_dict"
        if sd.get("optimizer") != self._name:
            raise ValueError(f"{op}: state dict is for {sd.get('optimizer')!r}, not {self._name!r}")
        if len(sd["param_groups"]) != len(self.param_groups) or len(sd["state"]) != len(self.state):
            raise ValueError(f"{op}: state dict has {len(sd['param_groups'])} param groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for gi, (g, sg, flat, st) in enumerate(zip(self.param_groups, sd["param_groups"], self._flats, sd["state"])):
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(f"{op}: param group {gi} has {len(sg['params'])} params in the state dict, "
                                 f"{len(g['params'])} here")
            n = 0 if flat is None else flat.size
            for k, v in st.items():
                if isinstance(v, np.ndarray) and (v.size != n or (flat is not None and v.dtype != flat.data.dtype)):
                    raise ValueError(f"{op}: state {k!r} of group {gi} has {v.size} elements of {v.dtype}, "
                                     f"expected {n} of {None if flat is None else flat.data.dtype}")
        for g, sg in zip(self.param_groups, sd["param_groups"]):
            if bool(sg.get("decay_bias", True)) != g["decay_bias"]:
                raise ValueError(f"{op}: decay_bias differs from the state dict's; it fixes the buffer layout")
            for k, v in sg.items():
                if k != "params":
                    g[k] = tuple(v) if k == "betas" else v
        self.state = [{k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in st.items()}
                      for st in sd["state"]]
        self.skipped_steps = int(sd.get("skipped_steps", 0))

    def __repr__(self):
        lines = [f"{self._name} ("]
        for i, g in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={g[k]}" for k in sorted(self.defaults))
            lines.append(f"  group {i}: {len(g['params'])} params; {hp}")
        return "\n".join(lines + [")"])


def _positive(op, name, v):
    v = _real(op, name, v)
    if not v > 0:
        raise ValueError(f"{op}: invalid {name} {v} (must be > 0)")
    return v


def _zeros(flat):
    return np.zeros(flat.size, dtype=flat.data.dtype)


# ---------------------------------------------------------------- the rules

class SGD(Optimizer):
    """SGD with momentum, dampening and Nesterov (torch.optim.SGD): v = mu*v + (1-dampening)*g, p -= lr*v.

    The velocity excludes lr, and on the first step v = g (as torch). nesterov: p -= lr*(g + mu*v).
    """

    _name = "SGD"

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 l1=0.0, max_norm=None, decay_bias=True, **kw):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov), l1=l1, max_norm=max_norm,
                         decay_bias=decay_bias, **kw)

    def _check(self, g):
        g["momentum"] = _nonneg(self._name, "momentum", g["momentum"])
        g["dampening"] = _real(self._name, "dampening", g["dampening"])
        g["nesterov"] = bool(g["nesterov"])
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError(f"{self._name}: nesterov requires momentum > 0 and dampening = 0, "
                             f"got momentum={g['momentum']}, dampening={g['dampening']}")

    def _advance(self, g, st, flat):
        st["step"] = st.get("step", 0) + 1
        st["_first"] = False
        if g["momentum"] != 0 and st.get("momentum_buffer") is None:
            st["momentum_buffer"] = np.empty(flat.size, dtype=flat.data.dtype)
            st["_first"] = True

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip):
        buf = st.get("momentum_buffer") if g["momentum"] != 0 else None
        _C.sgd_step(flat.data[lo:hi], flat.grad[lo:hi], None if buf is None else buf[lo:hi], -g["lr"],
                    g["momentum"], 1 - g["dampening"], g["nesterov"], st["_first"], gscale, gclip, wd, l1)


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al. 2011; torch.optim.Adagrad): sum += g^2; p -= clr * g / (sqrt(sum) + eps),
    clr = lr / (1 + (t - 1) * lr_decay)."""

    _name = "AdaGrad"

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, *, l1=0.0, max_norm=None, decay_bias=True, **kw):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps),
                         l1=l1, max_norm=max_norm, decay_bias=decay_bias, **kw)

    def _check(self, g):
        g["lr_decay"] = _nonneg(self._name, "lr_decay", g["lr_decay"])
        g["initial_accumulator_value"] = _nonneg(self._name, "initial_accumulator_value",
                                                 g["initial_accumulator_value"])
        g["eps"] = _nonneg(self._name, "eps", g["eps"])

    def _advance(self, g, st, flat):
        if "sum" not in st:
            st["step"] = 0
            st["sum"] = np.full(flat.size, g["initial_accumulator_value"], dtype=flat.data.dtype)
        st["step"] += 1

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip):
        clr = g["lr"] / (1 + (float(st["step"]) - 1) * g["lr_decay"])
        _C.adagrad_step(flat.data[lo:hi], flat.grad[lo:hi], st["sum"][lo:hi], -clr, g["eps"], gscale, gclip, wd, l1)


class RMSProp(Optimizer):
    """RMSProp (Hinton, lecture 6e; torch.optim.RMSprop): s = alpha*s + (1-alpha)*g^2,
    p -= lr * g / (sqrt(s [- gbar^2 if centered]) + eps), with optional momentum on g / (...)."""

    _name = "RMSProp"

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 l1=0.0, max_norm=None, decay_bias=True, **kw):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered), l1=l1, max_norm=max_norm,
                         decay_bias=decay_bias, **kw)

    def _check(self, g):
        g["alpha"] = _nonneg(self._name, "alpha", g["alpha"])
        g["eps"] = _nonneg(self._name, "eps", g["eps"])
        g["momentum"] = _nonneg(self._name, "momentum", g["momentum"])
        g["centered"] = bool(g["centered"])

    def _advance(self, g, st, flat):
        if "square_avg" not in st:
            st["step"] = 0
            st["square_avg"] = _zeros(flat)
        if g["centered"] and "grad_avg" not in st:
            st["grad_avg"] = _zeros(flat)
        if g["momentum"] > 0 and "momentum_buffer" not in st:
            st["momentum_buffer"] = _zeros(flat)
        st["step"] += 1

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip):
        ga = st["grad_avg"][lo:hi] if g["centered"] else None
        buf = st["momentum_buffer"][lo:hi] if g["momentum"] > 0 else None
        _C.rmsprop_step(flat.data[lo:hi], flat.grad[lo:hi], st["square_avg"][lo:hi], ga, buf, -g["lr"], g["alpha"],
                        g["eps"], g["momentum"], gscale, gclip, wd, l1)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015; torch.optim.Adam): bias-corrected moments, eps added after sqrt(v_hat),
    optional AMSGrad (Reddi et al. 2018). weight_decay is coupled L2 (added to g)."""

    _name = "Adam"
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 l1=0.0, max_norm=None, decay_bias=True, **kw):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad),
                         l1=l1, max_norm=max_norm, decay_bias=decay_bias, **kw)

    def _check(self, g):
        b = g["betas"]
        if not isinstance(b, (tuple, list)) or len(b) != 2:
            raise ValueError(f"{self._name}: betas must be a pair (beta1, beta2), got {b!r}")
        g["betas"] = (_unit(self._name, "beta1 (betas[0])", b[0]), _unit(self._name, "beta2 (betas[1])", b[1]))
        g["eps"] = _nonneg(self._name, "eps", g["eps"])
        g["amsgrad"] = bool(g["amsgrad"])

    def _advance(self, g, st, flat):
        if "exp_avg" not in st:
            st["step"] = 0
            st["exp_avg"] = _zeros(flat)
            st["exp_avg_sq"] = _zeros(flat)
        if g["amsgrad"] and "max_exp_avg_sq" not in st:
            st["max_exp_avg_sq"] = _zeros(flat)
        st["step"] += 1

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip):
        beta1, beta2 = g["betas"]
        lr, t = g["lr"], float(st["step"])
        # torch/optim/adam.py, _single_tensor_adam (not capturable): the same expressions, in double.
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        step_size = lr / bias_correction1
        bc2_sqrt = bias_correction2 ** 0.5
        decay = 1.0
        if self._decoupled:
            decay, wd = (1 - lr * wd if wd != 0 else 1.0), 0.0
        vmax = st["max_exp_avg_sq"][lo:hi] if g["amsgrad"] else None
        _C.adam_step(flat.data[lo:hi], flat.grad[lo:hi], st["exp_avg"][lo:hi], st["exp_avg_sq"][lo:hi], vmax,
                     beta1, beta2, g["eps"], -step_size, bc2_sqrt, decay, gscale, gclip, wd, l1)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019; torch.optim.AdamW): Adam with decoupled decay p *= 1 - lr*wd."""

    _name = "AdamW"
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, **kw):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, **kw)


# ---------------------------------------------------------------- clipping and max-norm, standalone

def _grad_arrays(op, params_or_opt):
    """Flat gradient buffers of an optimizer, or the gradients of a list of Parameters."""
    if isinstance(params_or_opt, Optimizer):
        return [f.grad for f in params_or_opt._flats if f is not None]
    if isinstance(params_or_opt, Parameter):
        params_or_opt = [params_or_opt]
    out = []
    for p in params_or_opt:
        if not isinstance(p, Parameter):
            raise TypeError(f"{op}: expected an Optimizer or Parameters, got {type(p).__name__}")
        out.append(p.grad)
    return out


def clip_grad_norm_(params_or_opt, max_norm):
    """Scale all gradients in place so their global L2 norm is at most max_norm (torch's clip_grad_norm_:
    coefficient min(max_norm / (norm + 1e-6), 1)). One norm pass and one scaling pass per flat buffer.
    Returns the norm before clipping (inf or nan if a gradient is not finite; then nothing is scaled)."""
    max_norm = _positive("clip_grad_norm_", "max_norm", max_norm)
    grads = _grad_arrays("clip_grad_norm_", params_or_opt)
    total, finite = 0.0, True
    for g in grads:
        s, f = _C.grad_sumsq(g)
        total, finite = total + s, finite and f
    norm = math.sqrt(total) if finite else math.nan
    if finite:
        coef = min(max_norm / (norm + 1e-6), 1.0)
        for g in grads:
            _C.grad_scale_clamp(g, coef, math.inf)
    return norm


def clip_grad_value_(params_or_opt, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value] in place (torch's clip_grad_value_)."""
    clip_value = _positive("clip_grad_value_", "clip_value", clip_value)
    for g in _grad_arrays("clip_grad_value_", params_or_opt):
        _C.grad_scale_clamp(g, 1.0, clip_value)


def apply_max_norm_(params, max_norm):
    """Max-norm constraint: rescale each unit's incoming weight vector (row of p.data along axis 0, i.e. the
    output unit / filter of a (K, C, R, S) or (out, in) weight) to L2 norm <= max_norm, as
    torch.renorm(w, 2, 0, max_norm). 1-D parameters (biases) are left alone."""
    max_norm = _positive("apply_max_norm_", "max_norm", max_norm)
    for p in ([params] if isinstance(params, Parameter) else params):
        if p.data.ndim > 1:
            _C.maxnorm_rows(p.data, max_norm)


# ---------------------------------------------------------------- L-BFGS (numpy; a port of torch.optim.LBFGS)

def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimiser of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to bounds (Nocedal & Wright (3.59))."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Line search for a step t satisfying the strong Wolfe conditions (Nocedal & Wright, Algorithms 3.5, 3.6),
    the same bracketing and zoom as torch.optim.lbfgs._strong_wolfe. Returns (f, g, t, evaluations)."""
    d_norm = float(np.abs(d).max())
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = float(g_new.dot(d))
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = float(g_new.dot(d))
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # safeguard: a point too near the bracket's ends makes no progress (minFunc's rule)
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = float(g_new.dot(d))
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


class LBFGS:
    """L-BFGS for the full-batch case (Nocedal & Wright, Algorithm 7.4), numpy over one flat buffer; the same
    algorithm, defaults and stopping rules as torch.optim.LBFGS (with line_search_fn="strong_wolfe" or None).

    ``step(closure)``: closure() zeroes the gradients, runs forward and backward and returns the loss (a float);
    one step runs up to max_iter iterations. One param group only, as in torch. The scalars (dot products,
    step lengths) are Python floats (float64); torch keeps them as tensors of the parameters' dtype, so float32
    runs agree with torch's only to float32 rounding, float64 runs to ~1e-12.
    """

    _name = "LBFGS"

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):
        op = self._name
        groups = _params_list(op, params)
        if len(groups) != 1:
            raise ValueError(f"{op}: doesn't support per-parameter options (parameter groups), got {len(groups)}")
        ps = groups[0]["params"]
        ps = [ps] if isinstance(ps, Parameter) else list(ps)
        if not ps:
            raise ValueError(f"{op}: param group 0 has no params")
        for p in ps:
            if not isinstance(p, Parameter):
                raise TypeError(f"{op}: params must be cnnkit Parameters, got {type(p).__name__}")
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"{op}: line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        self.param_groups = [dict(lr=_nonneg(op, "lr", lr), max_iter=int(max_iter), max_eval=int(max_eval),
                                  tolerance_grad=float(tolerance_grad), tolerance_change=float(tolerance_change),
                                  history_size=int(history_size), line_search_fn=line_search_fn, params=ps)]
        self._trainable = [p for p in ps if p.requires_grad]
        self._flat = FlatBuffer(self._trainable)
        self.state = {"func_evals": 0, "n_iter": 0}

    def zero_grad(self):
        self._flat.zero_grad()

    def _gather_flat_grad(self):
        return self._flat.grad.copy()

    def _add_grad(self, step_size, update):
        self._flat.data += step_size * update

    def _directional_evaluate(self, closure, x, t, d):
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._flat.data[...] = x
        return loss, flat_grad

    def step(self, closure):
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]
        state = self.state
        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad()
        opt_cond = np.abs(flat_grad).max() <= tolerance_grad
        if opt_cond:
            return orig_loss
        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag, prev_flat_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = float(y.dot(s))
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / float(y.dot(y))
                # two-loop recursion: d = -H g
                num_old = len(old_dirs)
                al = [None] * history_size
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = float(old_stps[i].dot(q)) * ro[i]
                    q += -al[i] * old_dirs[i]
                d = r = q * H_diag
                for i in range(num_old):
                    be_i = float(old_dirs[i].dot(r)) * ro[i]
                    r += (al[i] - be_i) * old_stps[i]
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            t = min(1.0, 1.0 / float(np.abs(flat_grad).sum())) * lr if state["n_iter"] == 1 else lr
            gtd = float(flat_grad.dot(d))
            if gtd > -tolerance_change:
                break
            ls_func_evals = 0
            if line_search_fn is not None:
                x_init = self._flat.data.copy()

                def obj_func(x, t, d):
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(obj_func, x_init, t, d, loss, flat_grad, gtd,
                                                                  max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = np.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = np.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if np.abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break
        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    def state_dict(self):
        st = {k: ([a.copy() for a in v] if isinstance(v, list) else (v.copy() if isinstance(v, np.ndarray) else v))
              for k, v in self.state.items()}
        g = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"optimizer": self._name, "state": st, "param_groups": [g]}

    def load_state_dict(self, sd):
        if sd.get("optimizer") != self._name:
            raise ValueError(f"{self._name}.load_state_dict: state dict is for {sd.get('optimizer')!r}")
        self.param_groups[0].update(sd["param_groups"][0])
        self.state = {k: ([a.copy() for a in v] if isinstance(v, list)
                          else (v.copy() if isinstance(v, np.ndarray) else v)) for k, v in sd["state"].items()}
