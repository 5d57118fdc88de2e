"""The Optimizer base class: param groups, one FlatBuffer per group, the finite check, the device control
block, clipping folded into the step, and state dicts. The update rules are its subclasses (sgd.py, ...)."""
import math
import warnings

import numpy as np

from .. import _C
from .. import profiler as _profiler
from .._validate import check_nonneg, check_positive
from .._xp import array_module, is_device_array
from ..ops import _backend
from ..parameter import FlatBuffer, Parameter
from .frozen import count_frozen_steps, live_ranges, runs, update_as_of


_NONFINITE = ("skip", "raise")
_LAYOUT = _C.optim_ctl_layout   # slots of the device control block (csrc/ops/optim.h, OptimCtl)


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds Inf or NaN and the optimizer's policy is nonfinite="raise"."""


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
    keywords of the ``cnnkit.ops.optim_steps`` steps on a GPU).

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
        self.clip_grad_norm = None if clip_grad_norm is None else check_positive(op, "clip_grad_norm", clip_grad_norm)
        self.clip_grad_value = (None if clip_grad_value is None
                                else check_positive(op, "clip_grad_value", clip_grad_value))
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
        g["lr"] = check_nonneg(op, "lr", g["lr"])
        g["weight_decay"] = check_nonneg(op, "weight_decay", g["weight_decay"])
        g["l1"] = check_nonneg(op, "l1", g["l1"])
        if g["max_norm"] is not None:
            g["max_norm"] = check_positive(op, "max_norm", g["max_norm"])
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
        xp, kernels = array_module(flat.data), _backend.kernels(flat.data)
        with xp.cuda.Device(flat.data.device.id):
            # made on the device, its nonzero counters written as scalars: no host-to-device copy in a step
            self._ctl = ctl = xp.zeros(kernels.ctl_size(len(self.param_groups)), dtype=xp.float64)
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
            self._work = xp.empty(kernels.grad_sumsq_workspace(), dtype=xp.float64)
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
        """One read-only pass over every trainable gradient: (all finite, global L2 norm)."""
        total, finite = 0.0, True
        for flat, lo, hi in live_ranges(self._flats):
            s, f = _C.grad_sumsq(flat.grad[lo:hi])
            total += s
            finite = finite and f
        return finite, total

    def _first_nonfinite(self):
        for gi, g in enumerate(self.param_groups):
            for p in g["_trainable"]:
                if not p.requires_grad:
                    continue
                xp = array_module(p.grad)
                if not bool(_host(xp.all(xp.isfinite(p.grad)))):
                    return f"{p!r} in param group {gi}"
        return "?"

    def _raise_nonfinite(self):
        raise NonFiniteGradientError(
            f"{self._name}.step: non-finite gradient (Inf or NaN) in {self._first_nonfinite()}; "
            f"parameters and optimizer state are unchanged")

    @_profiler.traced(cat="optimizer")   # an "Adam.step" range while a profile records
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
        ctl, lay = self._ctl, _LAYOUT
        kernels = _backend.kernels(ctl)
        ranges = live_ranges(self._flats)
        if not ranges:
            ctl[lay["sumsq"]] = 0.0
            ctl[lay["finite"]] = 1.0
        for k, (flat, lo, hi) in enumerate(ranges):
            kernels.grad_sumsq_device(flat.grad[lo:hi], out=ctl, accumulate=k > 0, workspace=self._work)
        self._norm_on_device = True
        if self.nonfinite == "raise" and float(ctl[lay["finite"]].get()) == 0.0:
            self._raise_nonfinite()
        # the clip coefficient is made on the device from the norm in ctl; the host passes its sign only
        self._apply(1.0, {"ctl": ctl, "clip_norm": self.clip_grad_norm or 0.0})
        kernels.optim_ctl_finish(ctl, len(self.param_groups))

    def _apply(self, gscale, dev):
        """Per group: state, the fused step over the decayed and the undecayed range, the max-norm projection."""
        gclip = math.inf if self.clip_grad_value is None else self.clip_grad_value
        for gi, (g, st, flat) in enumerate(zip(self.param_groups, self.state, self._flats)):
            if flat is None or not any(p.requires_grad for p in flat.params):
                continue   # every parameter frozen: nothing moves, not even the step count (torch: no grads)
            self._advance(gi, g, st, flat)
            kw = dict(dev, group=gi) if dev else dev
            nd = g["_n_decayed"]
            # maximize: torch negates the gradient first; g * (-s) rounds exactly as -(g * s)
            gs = -gscale if g["maximize"] else gscale
            lags = None if dev else st.get("frozen_steps")
            for lo, hi, lag in runs(flat, lags):
                for a, b, wd, l1 in ((lo, min(hi, nd), g["weight_decay"], g["l1"]), (max(lo, nd), hi, 0.0, 0.0)):
                    if b > a:
                        update_as_of(self, g, st, flat, a, b, wd, l1, gs, gclip, kw, lag)
            if not dev:
                count_frozen_steps(st, flat)
            if g["max_norm"] is not None:
                mn = _backend.kernels(flat.data).maxnorm_rows
                for p in g["_trainable"]:
                    if p.data.ndim > 1 and p.requires_grad:
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
                st.pop("frozen_steps", None)
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
            d = {k: (v.copy() if _is_array(v) else list(v) if isinstance(v, list) else v)
                 for k, v in st.items() if not k.startswith("_")}
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
            lags = st.get("frozen_steps")
            if lags is not None:
                want = 0 if flat is None else len(flat.params)
                if not isinstance(lags, (list, tuple)) or len(lags) != want:
                    raise ValueError(f"{op}: frozen_steps of group {gi} must be a list of {want} step counts (one "
                                     f"per trainable parameter), got {lags!r}"[:300])
                if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                           and 0 <= v <= st.get("step", 0) for v in lags):
                    raise ValueError(f"{op}: frozen_steps of group {gi} must hold integers in [0, step="
                                     f"{st.get('step', 0)}], got {list(lags)!r}"[:300])
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
        self.state = [{k: (to_flat(v) if _is_array(v) else [int(x) for x in v] if k == "frozen_steps" else v)
                       for k, v in st.items()} for st in sd["state"]]
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
