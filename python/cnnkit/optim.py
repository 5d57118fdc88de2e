"""Optimizers: torch.optim's update rules, defaults and arithmetic order, each step one fused kernel pass.

Every param group is moved into one contiguous ``FlatBuffer`` (``p.data`` / ``p.grad`` become views), so a
step is: one read-only pass over all flat gradients (finite check + global norm), then one fused kernel pass
per group over flat param/grad/state (csrc/ops/optim.cpp, or optim.cu for CuPy parameters). Per-step scalars
(bias corrections, decayed lr, clip coefficient) come from one set of formulas (csrc/ops/optim.h), computed
here on the host for the CPU exactly as torch/optim/*.py computes them. ``LBFGS`` is numpy or CuPy, ported from
torch.optim.LBFGS (Nocedal & Wright, Algorithms 7.4 and 3.5/3.6 for the strong-Wolfe line search).

On a GPU (after ``model.to("cuda")``, before or after the optimizer is built: the state follows the
parameters at the next step) nothing is read back to the host inside ``step()`` with nonfinite="skip": the
finite flag, the norm, the clip coefficient and the step counters live in a device control block that the
kernels read (torch's fused/capturable optimizers do the same with found_inf and device step tensors).
``skipped_steps`` and ``last_grad_norm`` read it lazily (one host sync per read); nonfinite="raise" reads the
finite flag once per step; ``state_dict()`` reads the counters once and returns arrays on the parameters'
device, as torch does; ``load_state_dict`` takes numpy or CuPy arrays and copies them to that device.

``maximize=True`` ascends, as torch's. Beyond torch: ``nonfinite="skip"|"raise"`` (a non-finite gradient is
found before anything changes; a skipped step leaves params and state bit-identical and counts in
``skipped_steps``), ``l1`` (L1 / elastic net gradient added in the same pass), ``max_norm`` (max-norm
constraint after the step), ``clip_grad_norm`` and ``clip_grad_value`` folded into the step, and
``decay_bias``.

``decay_bias`` defaults to True: weight decay, L1 and max-norm reach every parameter, as in torch.optim, so a
model trained here and in PyTorch with the same hyperparameters gets the same numbers. Set
``decay_bias=False`` (per group or for all) to leave 1-D parameters (biases, batch-norm scales and shifts)
out of weight decay and L1, as CS231n suggests: their few values do not overfit, and decaying a BN scale
fights the normalisation.
"""
import math
import numbers
import warnings

import numpy as np

from . import _C
from ._xp import array_module, is_device_array
from .ops import _backend, _int
from .parameter import FlatBuffer, Parameter

__all__ = ["Optimizer", "SGD", "AdaGrad", "RMSProp", "Adam", "AdamW", "LBFGS", "NonFiniteGradientError",
           "clip_grad_norm_", "clip_grad_value_", "apply_max_norm_"]

_NONFINITE = ("skip", "raise")
_LAYOUT = _C.optim_ctl_layout   # slots of the device control block (csrc/ops/optim.h, OptimCtl)


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


def _group_params(op, group, index):
    """The Parameters of a param group (one Parameter or an iterable of them), at least one."""
    params = group["params"]
    params = [params] if isinstance(params, Parameter) else list(params)
    if not params:
        raise ValueError(f"{op}: param group {index} has no params")
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"{op}: params must be cnnkit Parameters, got {type(p).__name__}")
    # A parameter listed twice would get two slots in the flat buffer, one of them a dead copy; keep the
    # first occurrence (torch warns with the same words)
    unique = list({id(p): p for p in params}.values())   # dicts keep first-insertion order
    if len(unique) != len(params):
        warnings.warn(f"{op}: optimizer contains a parameter group with duplicate parameters (param group {index}: "
                      f"{len(params)} listed, {len(unique)} distinct); each is kept once", UserWarning,
                      stacklevel=3)
    return unique

class Optimizer:
    """Base class: param groups, one FlatBuffer per group, the finite check, clipping, state dicts.

    Subclasses define ``defaults``, ``_check(group)`` (hyperparameter validation), ``_state_spec(group)``
    (the flat state arrays and their initial values), and ``_update(group, state, flat, lo, hi, wd, l1,
    gscale, gclip, dev)`` (one fused kernel call on [lo, hi); ``dev`` is {} on the CPU and the control-block
    keywords of the ``cnnkit.ops._cuda`` steps on a GPU).

    On a GPU (CuPy parameters) a step reads nothing back to the host with ``nonfinite="skip"``: the finite
    flag, the global gradient norm, the skip counter and each group's step counter live in a small float64
    device array (the control block, csrc/ops/optim.h ``OptimCtl``) that the step kernels read themselves.
    ``skipped_steps`` and ``last_grad_norm`` read it when asked (one host sync each). ``nonfinite="raise"``
    needs the finite flag on the host, so it reads it once per step.
    """

    _name = "Optimizer"
    _primary = None       # the state array whose creation restarts the step count (torch: state initialised)
    _first_state = None   # SGD: the momentum buffer, set to the gradient on its first taken step

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
        self.state = []          # per group: dict of flat state arrays (and, on the CPU, the step counter)
        self._flats = []         # per group: FlatBuffer (None when every param is frozen)
        self._seen = {}          # id(parameter) -> index of its param group
        self._skipped = 0        # CPU counters; on a GPU they live in self._ctl
        self._last_norm = None
        self._ctl = None         # the device control block while the parameters are CuPy arrays
        self._work = None        # grad_sumsq's device scratch
        self._norm_on_device = False
        for g in _params_list(op, params):
            self.add_param_group(g)

    def add_param_group(self, group):
        op = self._name
        if not isinstance(group, dict):
            raise TypeError(f"{op}: a param group must be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{op}: param group {len(self.param_groups)} has no 'params' entry")
        params = _group_params(op, group, len(self.param_groups))
        for p in params:
            if id(p) in self._seen:
                raise ValueError(f"{op}: some parameters appear in more than one parameter group: {p!r} is already "
                                 f"in param group {self._seen[id(p)]}; a parameter can be in only one param group "
                                 f"(listing it in more than one param group would step it twice)")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{op}: unknown hyperparameters {sorted(unknown)}; expected {sorted(self.defaults)}")
        g = dict(self.defaults)
        g.update({k: v for k, v in group.items() if k != "params"})
        self._check_common(g)
        self._check(g)
        trainable = [p for p in params if p.requires_grad]
        ref = self._first_flat()
        if trainable and ref is not None and is_device_array(ref.data) != is_device_array(trainable[0].data):
            raise TypeError(f"{op}: param group {len(self.param_groups)} is on "
                            f"{'a GPU' if is_device_array(trainable[0].data) else 'the CPU'} but this optimizer's "
                            f"parameters are not; put every group on one device first (model.to(...))")
        for p in params:
            self._seen[id(p)] = len(self.param_groups)
        # Decayed parameters first, then (decay_bias=False) the 1-D ones: two contiguous ranges of one buffer.
        if not g["decay_bias"]:
            trainable = [p for p in trainable if p.data.ndim > 1] + [p for p in trainable if p.data.ndim <= 1]
        flat = FlatBuffer(trainable) if trainable else None
        g["params"] = params
        g["_trainable"] = trainable
        g["_n_decayed"] = (sum(p.size for p in trainable) if g["decay_bias"]
                           else sum(p.size for p in trainable if p.data.ndim > 1))
        self.param_groups.append(g)
        self._flats.append(flat)
        self.state.append({})
        if self._ctl is not None:   # room for the new group's counters (zeros), on the device
            xp = array_module(self._ctl)
            self._ctl = xp.concatenate([self._ctl, xp.zeros(_LAYOUT["per_group"], dtype=xp.float64)])

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

    # -- counters (on a GPU: read from the device control block)

    @property
    def skipped_steps(self):
        """Steps skipped for a non-finite gradient. On a GPU: one host sync per read."""
        if self._ctl is not None:
            return int(self._ctl[_LAYOUT["skipped"]].get())
        return self._skipped

    @property
    def last_grad_norm(self):
        """The global L2 norm of the last step's gradients (inf or nan if one was not finite; None before the
        first step). On a GPU: one host sync per read."""
        if self._ctl is not None and self._norm_on_device:
            return math.sqrt(float(self._ctl[_LAYOUT["sumsq"]].get()))
        return self._last_norm

    # -- the device

    def _first_flat(self):
        return next((f for f in self._flats if f is not None), None)

    def _follow_device(self):
        """After model.to(...) moved the flat buffers, move the state (and make or drop the control block) to
        their device. One type check when nothing moved."""
        flat = self._first_flat()
        if flat is None or is_device_array(flat.data) == (self._ctl is not None):
            return
        if is_device_array(flat.data):
            self._to_device(flat)
        else:
            self._to_host()

    def _ctl_base(self, gi):
        return _LAYOUT["group0"] + _LAYOUT["per_group"] * gi

    def _to_device(self, flat):
        from .ops import _cuda as _cuda_ops
        xp = array_module(flat.data)
        with xp.cuda.Device(flat.data.device.id):
            # made on the device, its nonzero counters written as scalars: no host-to-device copy in a step
            self._ctl = ctl = xp.zeros(_cuda_ops.ctl_size(len(self.param_groups)), dtype=xp.float64)
            ctl[_LAYOUT["finite"]] = 1.0
            if self._skipped:
                ctl[_LAYOUT["skipped"]] = float(self._skipped)
            for gi, st in enumerate(self.state):
                steps = st.pop("step", 0)
                if steps:
                    ctl[self._ctl_base(gi)] = float(steps)
                st.pop("_first", None)
                for k, v in st.items():
                    if isinstance(v, np.ndarray):
                        st[k] = xp.asarray(v)
            self._work = xp.empty(_cuda_ops.grad_sumsq_workspace(), dtype=xp.float64)
        self._norm_on_device = False

    def _to_host(self):
        ctl = self._ctl.get()
        if self._norm_on_device:
            self._last_norm = math.sqrt(float(ctl[_LAYOUT["sumsq"]]))
        self._skipped = int(ctl[_LAYOUT["skipped"]])
        for gi, st in enumerate(self.state):
            base = self._ctl_base(gi)
            if ctl[base + 1] != 0.0:   # SGD's buffer never started: the CPU makes it again, as a first step
                st.pop(self._first_state, None)
            for k, v in st.items():
                if is_device_array(v):
                    st[k] = v.get()
            if st or ctl[base] > 0:
                st["step"] = int(ctl[base])
        self._ctl = self._work = None
        self._norm_on_device = False

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
        return finite, total

    def _first_nonfinite(self):
        for gi, g in enumerate(self.param_groups):
            for p in g["_trainable"]:
                xp = array_module(p.grad)
                if not bool(_host(xp.all(xp.isfinite(p.grad)))):
                    return f"{p!r} in param group {gi}"
        return "?"

    def _raise_nonfinite(self):
        raise NonFiniteGradientError(
            f"{self._name}.step: non-finite gradient (Inf or NaN) in {self._first_nonfinite()}; "
            f"parameters and optimizer state are unchanged")

    def step(self, closure=None):
        """One update of every group. A closure (re-evaluates the loss and gradients) is optional.

        Order: finite check + global grad norm (one pass); then, per group, one fused kernel pass that clips,
        adds weight decay / L1 and applies the rule; then the max-norm projection. On a GPU the same passes,
        deciding on the device (see the class docstring).
        """
        loss = closure() if closure is not None else None
        self._follow_device()
        for gi, (g, flat) in enumerate(zip(self.param_groups, self._flats)):
            self._check_common(g)
            self._check(g)
            if flat is not None:
                self._check_bound(gi, g, flat)
        if self._ctl is not None:
            self._step_device()
            return loss
        finite, total = self._grad_check()
        self._last_norm = math.sqrt(total)
        if not finite:
            if self.nonfinite == "raise":
                self._raise_nonfinite()
            self._skipped += 1
            return loss
        gscale = 1.0 if self.clip_grad_norm is None else _C.clip_coef(self.clip_grad_norm, total)
        self._apply(gscale, {})
        return loss

    def _step_device(self):
        """The GPU step: no host read with nonfinite="skip" (one, of the finite flag, with "raise")."""
        from .ops import _cuda as _cuda_ops
        ctl, lay = self._ctl, _LAYOUT
        flats = [f for f in self._flats if f is not None]
        if not flats:
            ctl[lay["sumsq"]] = 0.0
            ctl[lay["finite"]] = 1.0
        for k, flat in enumerate(flats):
            _cuda_ops.grad_sumsq_device(flat.grad, out=ctl, accumulate=k > 0, workspace=self._work)
        self._norm_on_device = True
        if self.nonfinite == "raise" and float(ctl[lay["finite"]].get()) == 0.0:
            self._raise_nonfinite()
        # the clip coefficient is made on the device from the norm in ctl; the host passes its sign only
        self._apply(1.0, {"ctl": ctl, "clip_norm": self.clip_grad_norm or 0.0})
        _cuda_ops.optim_ctl_finish(ctl, len(self.param_groups))

    def _apply(self, gscale, dev):
        """Per group: state, the fused step over the decayed and the undecayed range, the max-norm projection."""
        gclip = math.inf if self.clip_grad_value is None else self.clip_grad_value
        for gi, (g, st, flat) in enumerate(zip(self.param_groups, self.state, self._flats)):
            if flat is None:
                continue
            self._advance(gi, g, st, flat)
            kw = dict(dev, group=gi) if dev else dev
            n, nd = flat.size, g["_n_decayed"]
            # maximize: torch negates the gradient first; g * (-s) rounds exactly as -(g * s)
            gs = -gscale if g["maximize"] else gscale
            for lo, hi, wd, l1 in ((0, nd, g["weight_decay"], g["l1"]), (nd, n, 0.0, 0.0)):
                if hi > lo:
                    self._update(g, st, flat, lo, hi, wd, l1, gs, gclip, kw)
            if g["max_norm"] is not None:
                mn = _backend.kernels(flat.data).maxnorm_rows
                for p in g["_trainable"]:
                    if p.data.ndim > 1:
                        mn(p.data, g["max_norm"], **({"ctl": dev["ctl"]} if dev else {}))

    def _state_spec(self, g):
        """[(name, initial value)] of the flat state arrays group g needs."""
        raise NotImplementedError

    def _advance(self, gi, g, st, flat):
        """Allocate missing state (on the flat's device) and advance the step counter, once per group and step.
        On a GPU the counters are the control block's: only a restart or SGD's first-step flag is written."""
        xp = array_module(flat.data)
        created = set()
        for name, init in self._state_spec(g):
            if st.get(name) is None:
                st[name] = xp.full(flat.size, init, dtype=flat.data.dtype)
                created.add(name)
        if self._ctl is None:
            if self._primary in created:
                st["step"] = 0
            st["step"] = st.get("step", 0) + 1
            st["_first"] = self._first_state in created
            return
        base = self._ctl_base(gi)
        if self._primary in created:
            self._ctl[base] = 0.0
        if self._first_state in created:
            self._ctl[base + 1] = 1.0

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev):
        raise NotImplementedError

    # -- state dicts

    def state_dict(self):
        """Hyperparameters, step counters and flat state arrays (copies, on the parameters' device), and the
        skip counter.

        Arrays are flat per group, in the group's buffer order; ``load_state_dict`` restores them exactly, so a
        resumed run equals the uninterrupted one bit for bit. On a GPU: one host sync (the counters).
        """
        self._follow_device()
        groups, idx = [], 0
        for g in self.param_groups:
            d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()
                 if k not in ("params", "_trainable", "_n_decayed")}
            d["params"] = list(range(idx, idx + len(g["params"])))
            idx += len(g["params"])
            groups.append(d)
        ctl = None if self._ctl is None else self._ctl.get()
        state = []
        for gi, st in enumerate(self.state):
            d = {k: (v.copy() if _is_array(v) else v) for k, v in st.items() if not k.startswith("_")}
            base = self._ctl_base(gi)
            if ctl is not None and (d or ctl[base] > 0):   # as the CPU: a step count once stepped or with state
                if ctl[base + 1] != 0.0:   # SGD's buffer has not started: as the CPU, which has none yet
                    d.pop(self._first_state, None)
                d["step"] = int(ctl[base])
            state.append(d)
        skipped = self._skipped if ctl is None else int(ctl[_LAYOUT["skipped"]])
        return {"optimizer": self._name, "state": state, "param_groups": groups, "skipped_steps": skipped}

    def load_state_dict(self, sd):
        """Restore a state dict; its arrays (numpy or CuPy) are copied to the parameters' device."""
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
                if _is_array(v) and (v.size != n or (flat is not None and v.dtype != flat.data.dtype)):
                    raise ValueError(f"{op}: state {k!r} of group {gi} has {v.size} elements of {v.dtype}, "
                                     f"expected {n} of {None if flat is None else flat.data.dtype}")
        for g, sg in zip(self.param_groups, sd["param_groups"]):
            if bool(sg.get("decay_bias", True)) != g["decay_bias"]:
                raise ValueError(f"{op}: decay_bias differs from the state dict's; it fixes the buffer layout")
            for k, v in sg.items():
                if k != "params":
                    g[k] = tuple(v) if k == "betas" else v
        self._follow_device()
        flat = self._first_flat()
        to_flat = _converter(None if flat is None else flat.data)
        self.state = [{k: (to_flat(v) if _is_array(v) else v) for k, v in st.items()} for st in sd["state"]]
        self._skipped = int(sd.get("skipped_steps", 0))
        if self._ctl is not None:   # the counters go into the control block, one host-to-device copy
            ctl = np.zeros(self._ctl.size)
            ctl[_LAYOUT["finite"]] = 1.0
            ctl[_LAYOUT["skipped"]] = self._skipped
            for gi, st in enumerate(self.state):
                ctl[self._ctl_base(gi)] = st.pop("step", 0)
            xp = array_module(self._ctl)
            with xp.cuda.Device(self._ctl.device.id):
                self._ctl = xp.asarray(ctl)
            self._norm_on_device = False

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


def _is_array(v):
    return isinstance(v, np.ndarray) or is_device_array(v)


def _host(v):
    """A device array's value on the host (one sync); anything else as it is."""
    return v.get() if is_device_array(v) else v




def _converter(like):
    """A function copying an array (numpy or CuPy) to the device of `like` (numpy when like is None)."""
    if like is None or not is_device_array(like):
        return lambda v: _host(v).copy() if is_device_array(v) else np.array(v, copy=True)
    xp = array_module(like)
    dev = like.device.id

    def to_device(v):
        with xp.cuda.Device(dev):
            return xp.array(v, copy=True) if is_device_array(v) else xp.asarray(v)
    return to_device


# ---------------------------------------------------------------- the rules

class SGD(Optimizer):
    """SGD with momentum, dampening and Nesterov (torch.optim.SGD): v = mu*v + (1-dampening)*g, p -= lr*v.

    The velocity excludes lr, and on the first step v = g (as torch). nesterov: p -= lr*(g + mu*v).
    """

    _name = "SGD"
    _first_state = "momentum_buffer"

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

    def _state_spec(self, g):
        return [("momentum_buffer", 0.0)] if g["momentum"] != 0 else []

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev):
        buf = st.get("momentum_buffer") if g["momentum"] != 0 else None
        _backend.kernels(flat.data).sgd_step(flat.data[lo:hi], flat.grad[lo:hi], None if buf is None else buf[lo:hi],
                                     -g["lr"], g["momentum"], 1 - g["dampening"], g["nesterov"],
                                     st.get("_first", False), gscale, gclip, wd, l1, **dev)


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al. 2011; torch.optim.Adagrad): sum += g^2; p -= clr * g / (sqrt(sum) + eps),
    clr = lr / (1 + (t - 1) * lr_decay)."""

    _name = "AdaGrad"
    _primary = "sum"

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

    def _state_spec(self, g):
        return [("sum", g["initial_accumulator_value"])]

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev):
        p, grad, acc = flat.data[lo:hi], flat.grad[lo:hi], st["sum"][lo:hi]
        if dev:   # the decayed lr is made on the device from the group's step count
            _backend.kernels(p).adagrad_step(p, grad, acc, -g["lr"], g["eps"], gscale, gclip, wd, l1,
                                     lr_decay=g["lr_decay"], **dev)
        else:
            clr = _C.adagrad_clr(g["lr"], g["lr_decay"], float(st["step"]))
            _C.adagrad_step(p, grad, acc, -clr, g["eps"], gscale, gclip, wd, l1)


class RMSProp(Optimizer):
    """RMSProp (Hinton, lecture 6e; torch.optim.RMSprop): s = alpha*s + (1-alpha)*g^2,
    p -= lr * g / (sqrt(s [- gbar^2 if centered]) + eps), with optional momentum on g / (...)."""

    _name = "RMSProp"
    _primary = "square_avg"

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

    def _state_spec(self, g):
        return ([("square_avg", 0.0)] + ([("grad_avg", 0.0)] if g["centered"] else [])
                + ([("momentum_buffer", 0.0)] if g["momentum"] > 0 else []))

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev):
        ga = st["grad_avg"][lo:hi] if g["centered"] else None
        buf = st["momentum_buffer"][lo:hi] if g["momentum"] > 0 else None
        _backend.kernels(flat.data).rmsprop_step(flat.data[lo:hi], flat.grad[lo:hi], st["square_avg"][lo:hi], ga, buf,
                                         -g["lr"], g["alpha"], g["eps"], g["momentum"], gscale, gclip, wd, l1,
                                         **dev)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015; torch.optim.Adam): bias-corrected moments, eps added after sqrt(v_hat),
    optional AMSGrad (Reddi et al. 2018). weight_decay is coupled L2 (added to g)."""

    _name = "Adam"
    _decoupled = False
    _primary = "exp_avg"

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

    def _state_spec(self, g):
        return [("exp_avg", 0.0), ("exp_avg_sq", 0.0)] + ([("max_exp_avg_sq", 0.0)] if g["amsgrad"] else [])

    def _update(self, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev):
        beta1, beta2 = g["betas"]
        lr = g["lr"]
        # torch/optim/adam.py, _single_tensor_adam (not capturable): csrc/ops/optim.h adam_scalars, in double;
        # on a GPU made on the device from the group's step count (the host passes -lr)
        neg_step_size, bc2_sqrt = (-lr, 1.0) if dev else _C.adam_scalars(lr, beta1, beta2, float(st["step"]))
        decay = 1.0
        if self._decoupled:
            decay, wd = (1 - lr * wd if wd != 0 else 1.0), 0.0
        vmax = st["max_exp_avg_sq"][lo:hi] if g["amsgrad"] else None
        _backend.kernels(flat.data).adam_step(flat.data[lo:hi], flat.grad[lo:hi], st["exp_avg"][lo:hi],
                                      st["exp_avg_sq"][lo:hi], vmax, beta1, beta2, g["eps"], neg_step_size, bc2_sqrt,
                                      decay, gscale, gclip, wd, l1, **dev)


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
    Returns the norm before clipping (inf or nan if a gradient is not finite; then nothing is scaled): a float
    for numpy gradients; for CuPy gradients a 0-d float64 CuPy array (nan when not finite), as torch returns a
    tensor, so that clipping on a GPU reads nothing back to the host."""
    op = "clip_grad_norm_"
    max_norm = _positive(op, "max_norm", max_norm)
    grads = _grad_arrays(op, params_or_opt)
    if _on_device(op, grads):
        return _clip_grad_norm_device(grads, max_norm)
    total, finite = 0.0, True
    for g in grads:
        s, f = _C.grad_sumsq(g)
        total, finite = total + s, finite and f
    norm = math.sqrt(total) if finite else math.nan
    if finite:
        coef = _C.clip_coef(max_norm, total)
        for g in grads:
            _C.grad_scale_clamp(g, coef, math.inf)
    return norm


def _on_device(op, arrays):
    """True if every array is a CuPy array, False if every one is numpy (or there are none)."""
    dev = [is_device_array(a) for a in arrays]
    if any(dev) and not all(dev):
        raise TypeError(f"{op}: mixed devices: some gradients are cupy.ndarray (GPU), some numpy.ndarray (CPU); "
                        f"put every parameter on one device")
    return bool(dev) and dev[0]


def _clip_grad_norm_device(grads, max_norm):
    """The norm and the finite flag go into a 3-slot control block on the device, and the scaling kernels read
    the coefficient from it: no host sync."""
    from .ops import _cuda as _cuda_ops
    xp = array_module(grads[0])
    with xp.cuda.Device(grads[0].device.id):
        ctl = xp.zeros(_cuda_ops.ctl_size(0), dtype=xp.float64)
        work = xp.empty(_cuda_ops.grad_sumsq_workspace(), dtype=xp.float64)
        for k, g in enumerate(grads):
            _cuda_ops.grad_sumsq_device(g, out=ctl, accumulate=k > 0, workspace=work)
        for g in grads:
            _cuda_ops.grad_scale_clamp(g, 1.0, math.inf, ctl=ctl, clip_norm=max_norm)
        return xp.where(ctl[_LAYOUT["finite"]] != 0.0, xp.sqrt(ctl[_LAYOUT["sumsq"]]), xp.nan)


def clip_grad_value_(params_or_opt, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value] in place (torch's clip_grad_value_)."""
    clip_value = _positive("clip_grad_value_", "clip_value", clip_value)
    for g in _grad_arrays("clip_grad_value_", params_or_opt):
        _backend.kernels(g).grad_scale_clamp(g, 1.0, clip_value)


def apply_max_norm_(params, max_norm):
    """Max-norm constraint: rescale each unit's incoming weight vector (row of p.data along axis 0, i.e. the
    output unit / filter of a (K, C, R, S) or (out, in) weight) to L2 norm <= max_norm, as
    torch.renorm(w, 2, 0, max_norm). 1-D parameters (biases) are left alone."""
    max_norm = _positive("apply_max_norm_", "max_norm", max_norm)
    for p in ([params] if isinstance(params, Parameter) else params):
        if p.data.ndim > 1:
            _backend.kernels(p.data).maxnorm_rows(p.data, max_norm)


# ---------------------------------------------------------------- L-BFGS (numpy or CuPy; a port of torch.optim.LBFGS)

def _f(x):
    """A Python float from a number or a 0-d array; a device array costs one host sync."""
    return float(_host(x))

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
    d_norm = _f(abs(d).max())
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = _f(g_new.dot(d))
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
        gtd_new = _f(g_new.dot(d))
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
        gtd_new = _f(g_new.dot(d))
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


def _map_arrays(state, f):
    """LBFGS's state with f applied to every array, in lists too (the history); numbers as they are."""
    def one(v):
        return f(v) if _is_array(v) else v
    return {k: ([one(a) for a in v] if isinstance(v, list) else one(v)) for k, v in state.items()}


class LBFGS:
    """L-BFGS for the full-batch case (Nocedal & Wright, Algorithm 7.4), over one flat buffer of numpy or CuPy
    arrays; the same algorithm, defaults and stopping rules as torch.optim.LBFGS (with line_search_fn=
    "strong_wolfe" or None). On a GPU the vectors stay on the device but every dot product, norm test and
    loss is read back to the host (the line search decides on them): several host syncs per iteration.

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
        ps = _group_params(op, groups[0], 0)
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"{op}: line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
        max_iter = _int(op, "max_iter", max_iter, minimum=1)
        max_eval = max_iter * 5 // 4 if max_eval is None else _int(op, "max_eval", max_eval, minimum=1)
        self.param_groups = [dict(lr=_nonneg(op, "lr", lr), max_iter=max_iter, max_eval=max_eval,
                                  tolerance_grad=_nonneg(op, "tolerance_grad", tolerance_grad),
                                  tolerance_change=_nonneg(op, "tolerance_change", tolerance_change),
                                  history_size=_int(op, "history_size", history_size, minimum=1),
                                  line_search_fn=line_search_fn, params=ps)]
        self._trainable = [p for p in ps if p.requires_grad]
        self._flat = FlatBuffer(self._trainable)
        self.state = {"func_evals": 0, "n_iter": 0}
        self._on_device = is_device_array(self._flat.data)

    def _follow_device(self):
        """After model.to(...) moved the flat buffer, move the history (one type check when nothing moved)."""
        if is_device_array(self._flat.data) == self._on_device:
            return
        self.state = _map_arrays(self.state, _converter(self._flat.data))
        self._on_device = not self._on_device

    def zero_grad(self):
        self._flat.zero_grad()

    def _gather_flat_grad(self):
        return self._flat.grad.copy()

    def _add_grad(self, step_size, update):
        self._flat.data += step_size * update

    def _directional_evaluate(self, closure, x, t, d):
        self._add_grad(t, d)
        loss = _f(closure())
        flat_grad = self._gather_flat_grad()
        self._flat.data[...] = x
        return loss, flat_grad

    def step(self, closure):
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]
        self._follow_device()
        state = self.state
        orig_loss = closure()
        loss = _f(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad()
        opt_cond = _host(abs(flat_grad).max()) <= tolerance_grad
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
                ys = _f(y.dot(s))
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / _f(y.dot(y))
                # two-loop recursion: d = -H g
                num_old = len(old_dirs)
                al = [None] * history_size
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = _f(old_stps[i].dot(q)) * ro[i]
                    q += -al[i] * old_dirs[i]
                d = r = q * H_diag
                for i in range(num_old):
                    be_i = _f(old_dirs[i].dot(r)) * ro[i]
                    r += (al[i] - be_i) * old_stps[i]
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            t = min(1.0, 1.0 / _f(abs(flat_grad).sum())) * lr if state["n_iter"] == 1 else lr
            gtd = _f(flat_grad.dot(d))
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
                opt_cond = _host(abs(flat_grad).max()) <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:
                    loss = _f(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = _host(abs(flat_grad).max()) <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if _host(abs(d * t).max()) <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break
        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    def state_dict(self):
        self._follow_device()
        st = _map_arrays(self.state, lambda a: a.copy())
        g = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"optimizer": self._name, "state": st, "param_groups": [g]}

    def load_state_dict(self, sd):
        if sd.get("optimizer") != self._name:
            raise ValueError(f"{self._name}.load_state_dict: state dict is for {sd.get('optimizer')!r}")
        self.param_groups[0].update(sd["param_groups"][0])
        self.state = _map_arrays(sd["state"], _converter(self._flat.data))
        self._on_device = is_device_array(self._flat.data)
