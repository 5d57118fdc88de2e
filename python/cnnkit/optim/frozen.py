"""Parameters frozen after the optimizer was built (``requires_grad = False`` set later).

They stay in their group's flat buffer, and every step leaves them out, as torch leaves out a parameter whose
grad is None: the fused kernels run over the ranges of the parameters that train now, the finite check and
the gradient norm read those ranges only, and a frozen parameter's value and state do not move. On the CPU
each group also counts, per parameter, the steps it spent frozen (``state["frozen_steps"]``, kept in the state
dict), so an unfrozen parameter resumes with its own step count, as torch's per-parameter ``step``.
"""


def runs(flat, lags):
    """[(lo, hi, lag)]: the flat ranges of the parameters with requires_grad, merged while contiguous and at the
    same lag (lags: per parameter, the steps it spent frozen; None: all 0)."""
    out = []
    for i, (p, off) in enumerate(zip(flat.params, flat.offsets)):
        if not p.requires_grad:
            continue
        lag = lags[i] if lags else 0
        if out and out[-1][1] == off and out[-1][2] == lag:
            out[-1][1] = off + p.size
        else:
            out.append([off, off + p.size, lag])
    return out


def live_ranges(flats):
    """[(flat, lo, hi)]: over every group's buffer (None: a group with nothing trainable), the ranges of the
    parameters that train now."""
    return [(flat, lo, hi) for flat in flats if flat is not None for lo, hi, _ in runs(flat, None)]


def count_frozen_steps(st, flat):
    """After a step of the group: one more step spent frozen for each frozen parameter (the state key appears
    only once one was frozen)."""
    if all(p.requires_grad for p in flat.params):
        return
    lags = st.setdefault("frozen_steps", [0] * len(flat.params))
    for i, p in enumerate(flat.params):
        lags[i] += not p.requires_grad


def update_as_of(opt, g, st, flat, lo, hi, wd, l1, gscale, gclip, dev, lag):
    """opt._update on [lo, hi) for parameters `lag` steps behind the group: their own step count sets Adam's bias
    correction and AdaGrad's lr decay, and SGD's momentum buffer starts (= g) at their first step, as torch's
    per-parameter state does."""
    if not lag:
        opt._update(g, st, flat, lo, hi, wd, l1, gscale, gclip, dev)
        return
    step, first = st["step"], st.get("_first", False)
    st["step"], st["_first"] = step - lag, first or step - lag == 1
    try:
        opt._update(g, st, flat, lo, hi, wd, l1, gscale, gclip, dev)
    finally:
        st["step"], st["_first"] = step, first
