"""ck.gradcheck: compare a layer's or a model's backward with float64 central differences (CS231n notes,
"gradient checks"), per parameter, sampling large tensors and telling kinks from failures.

To check a layer of your own, see the ck.Layer docstring (cnnkit/layer.py) and tests/test_gradcheck.py.
"""
import copy

import numpy as np

from .data._common import check_float
from ._validate import check_flag as _flag
from .graph import Model
from .layer import Layer
from ._validate import check_int as _int
from . import losses as _losses


class GradcheckError(AssertionError):
    """Raised by gradcheck when some gradient does not match; the message names the layer and parameter."""


class GradcheckReport:
    """Per-tensor results: name, layer, coordinates checked, kinks, failures, worst relative error."""

    def __init__(self, rows, rtol, atol):
        self.rows, self.rtol, self.atol = rows, rtol, atol

    @property
    def ok(self):
        return all(r["failures"] == 0 for r in self.rows)

    @property
    def kinks(self):
        return sum(r["kinks"] for r in self.rows)

    def __getitem__(self, name):
        for r in self.rows:
            if r["name"] == name:
                return r
        raise KeyError(name)

    def __str__(self):
        head = f"{'tensor':<28} {'layer':<28} {'checked':>8} {'kinks':>6} {'fail':>5} {'max rel err':>12}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['name']:<28} {r['layer'][:28]:<28} {r['checked']:>8} {r['kinks']:>6} "
                         f"{r['failures']:>5} {r['max_rel_err']:>12.3e}")
        lines.append(f"{'PASS' if self.ok else 'FAIL'} (rtol {self.rtol:g}, atol {self.atol:g})")
        return "\n".join(lines)

    __repr__ = __str__


def _as64(a):
    return np.array(a, dtype=np.float64, copy=True, order="C")


def _rel(a, n, floor):
    # relative error; gradients smaller than floor = atol / rtol are compared against the floor instead
    return abs(a - n) / max(abs(a), abs(n), floor, 1e-300)


def gradcheck(layer_or_model, x, y=None, loss=None, eps=1e-5, rtol=1e-6, atol=1e-8, max_coords=24, seed=0,
              check_input=True, raise_on_fail=True):
    """Check the backward pass of `layer_or_model` at input `x` (an array, or a tuple for several inputs).

    It works on a float64 copy (the caller's object is untouched), replays the same random draws
    (dropout masks, pooling regions) and BatchNorm running statistics for every evaluation, and checks
    the input and every parameter with requires_grad.

    The scalar checked is: `loss(out, y) -> (value, dout)` if given; softmax cross-entropy if `y` holds
    integer labels; mean squared error against `y` if it is a float array; else sum(out * R) for a fixed
    random R (a plain sum would hide errors, e.g. BatchNorm's input gradient of a sum is zero).
    A coordinate fails when |analytic - numeric| > atol + rtol * max(|analytic|, |numeric|) and it is
    not a kink: a coordinate whose one-sided differences (f(x+h) - f(x))/h and (f(x) - f(x-h))/h
    differ by at least the error found sits where the function has no derivative (ReLU at 0, a max-pool
    tie, a hinge at its margin) and is counted as a kink, not a failure. A NaN in either gradient, or in
    the loss, is always a failure. The default eps 1e-5 balances
    truncation against round-off (at 1e-6 round-off reached 1e-9 on BatchNorm inputs). At most
    `max_coords` (an int >= 1) coordinates per tensor are checked (all when fewer), sampled with `seed` (an
    int >= 0). Returns a GradcheckReport; raises GradcheckError naming the layer, the
    parameter and the worst error when something fails (unless raise_on_fail=False).
    """
    op = "gradcheck"
    if not isinstance(layer_or_model, Layer):
        raise TypeError(f"{op}: expected a ck.Layer or model, got {type(layer_or_model).__name__}")
    eps, rtol, atol = (check_float(op, n, v) for n, v in (("eps", eps), ("rtol", rtol), ("atol", atol)))
    for name, v in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if v < 0 or (v == 0 and name != "atol"):   # eps is a step, rtol divides the relative-error floor
            raise ValueError(f"{op}: {name} must be {'>= 0' if name == 'atol' else '> 0'}, got {v:g}")
    max_coords, seed = _int(op, "max_coords", max_coords, minimum=1), _int(op, "seed", seed, minimum=0)
    check_input, raise_on_fail = _flag(op, "check_input", check_input), _flag(op, "raise_on_fail", raise_on_fail)
    if loss is not None and not callable(loss):
        raise TypeError(f"{op}: loss must be a callable loss(out, y) -> (value, dout), got {type(loss).__name__}")
    m = copy.deepcopy(layer_or_model).to(np.float64)
    multi = isinstance(x, (tuple, list))
    xs = [_as64(a) for a in (x if multi else (x,))]
    rng = np.random.default_rng(seed)
    rng_state = m.rng_state()
    bufs = {path: {k: v.copy() for k, v in l._buffers.items()} for path, l in m.named_layers()}
    layers = dict(m.named_layers())
    is_model = isinstance(m, Model)

    def run():
        m.set_rng_state(rng_state)
        for path, b in bufs.items():
            for k, v in b.items():
                layers[path]._buffers[k][...] = v
        return m.forward(*xs)

    out = run()
    R = None
    if loss is None and y is None:
        R = rng.standard_normal(out.shape) / np.sqrt(max(out.size, 1))

    def value(out):
        if R is not None:
            return float((out * R).sum()), R
        if loss is not None:
            res = loss(out, y)
            if not isinstance(res, tuple) or len(res) != 2:
                raise TypeError(f"{op}: loss must return (value, dout), got {type(res).__name__}")
            return res
        ya = np.asarray(y)
        if np.issubdtype(ya.dtype, np.integer):
            return _losses.softmax_cross_entropy(out, ya)
        return _losses.mse(out, _as64(ya))

    f0, dout = value(out)
    if np.shape(dout) != out.shape:
        raise ValueError(f"{op}: loss returned dout of shape {np.shape(dout)}; expected the output's shape {out.shape}")
    nan_loss = bool(np.isnan(f0))   # then every comparison is meaningless: all of them fail
    m.zero_grad()
    if is_model:
        dx = m.backward(dout, need_dx=check_input)
    else:
        dx = m.backward(dout, need_dx=True if not multi else (True,) * len(xs))
    dxs = list(dx) if multi else [dx]

    def f():
        return value(run())[0]

    tensors = []   # (name, layer label, array to perturb, analytic gradient)
    if check_input:
        for i, (a, g) in enumerate(zip(xs, dxs)):
            tensors.append((f"input[{i}]" if multi else "input", "(input)", a, g))
    for name, p in m.named_parameters():
        if p.requires_grad:
            path = name.rsplit(".", 1)[0] if "." in name else ""
            lay = layers.get(path, m)
            label = (f"'{path}' " if path else "") + type(lay).__name__
            tensors.append((name, label, p.data, p.grad.copy()))
    if not tensors:
        raise ValueError(f"{op}: nothing to check: check_input is False and no parameter of {m.label()} requires grad")

    rows = []
    worst_fail = None
    for name, label, arr, g in tensors:
        if g is None:
            raise GradcheckError(f"gradcheck: no gradient was returned for {name} of {label}")
        if g.shape != arr.shape:
            raise GradcheckError(f"gradcheck: {label} {name}: gradient shape {g.shape} != tensor shape {arr.shape}")
        n = arr.size
        idxs = np.arange(n) if n <= max_coords else rng.choice(n, size=max_coords, replace=False)
        flat = arr.reshape(-1)
        gflat = g.reshape(-1)
        row = dict(name=name, layer=label, checked=len(idxs), kinks=0, failures=0, max_rel_err=0.0, worst=None)
        worst_ratio = -1.0
        for i in idxs:
            orig = flat[i]
            flat[i] = orig + eps
            fp = f()
            flat[i] = orig - eps
            fm = f()
            flat[i] = orig
            num = (fp - fm) / (2 * eps)
            a = float(gflat[i])
            err = abs(a - num)
            tol = atol + rtol * max(abs(a), abs(num))
            bad = nan_loss or not err <= tol   # a NaN on either side (or in the loss) is a failure
            if bad:
                dplus, dminus = (fp - f0) / eps, (f0 - fm) / eps
                jump = dplus - dminus
                kink = abs(jump) >= err
                if not kink and abs(jump) > 10 * (atol + rtol * max(abs(dplus), abs(dminus))):
                    # Several units can sit exactly on their kinks (e.g. ReLU pre-activations of 0 over a zero
                    # image patch): then +eps wakes some units and -eps others, the one-sided slopes may even
                    # agree in sign, and the test above misses it. At a kink *at this point* the slope jump
                    # stays the same when the step is halved; a smooth function's jump halves with it.
                    h = eps / 2
                    flat[i] = orig + h
                    fph = f()
                    flat[i] = orig - h
                    fmh = f()
                    flat[i] = orig
                    jump_h = (fph - f0) / h - (f0 - fmh) / h
                    kink = abs(jump_h - jump) < 0.25 * abs(jump)
                if kink:
                    row["kinks"] += 1
                    continue
                row["failures"] += 1
            rel = _rel(a, num, atol / rtol)
            if not np.isnan(row["max_rel_err"]) and not rel <= row["max_rel_err"]:
                row["max_rel_err"] = rel   # NaN, once seen, stays the worst
            ratio = np.inf if nan_loss or np.isnan(err) else err / max(tol, 1e-300)
            if ratio > worst_ratio:
                worst_ratio = ratio
                row["worst"] = (tuple(int(v) for v in np.unravel_index(i, arr.shape)), a, num)
        rows.append(row)
        if row["failures"] and worst_fail is None:
            worst_fail = row
    report = GradcheckReport(rows, rtol, atol)
    if worst_fail is not None and raise_on_fail:
        r = worst_fail
        idx, a, num = r["worst"]
        pname = r["name"].rsplit(".", 1)[-1]
        failed = [q["name"] for q in rows if q["failures"]]
        raise GradcheckError(
            f"gradcheck failed for layer {r['layer']}, parameter '{pname}' ({r['name']}): worst relative error "
            f"{_rel(a, num, atol / rtol):.3e} at index {idx} (analytic {a:.8e}, numeric {num:.8e}); {r['failures']} of "
            f"{r['checked']} checked coordinates failed (rtol {rtol:g}, atol {atol:g}). Failing tensors: {failed}"
            f"{'; the loss is NaN at the given input' if nan_loss else ''}"
            f"\n{report}")
    return report


__all__ = ["gradcheck", "GradcheckReport", "GradcheckError"]
