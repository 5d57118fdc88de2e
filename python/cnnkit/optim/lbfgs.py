"""L-BFGS (numpy or CuPy; a port of torch.optim.LBFGS) with an optional strong-Wolfe line search."""
import math

from .. import profiler as _profiler
from .._validate import check_int, check_nonneg
from .._xp import is_device_array
from ..parameter import FlatBuffer
from .optimizer import _converter, _group_params, _host, _is_array, _params_list


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
        max_iter = check_int(op, "max_iter", max_iter, minimum=1)
        max_eval = max_iter * 5 // 4 if max_eval is None else check_int(op, "max_eval", max_eval, minimum=1)
        self.param_groups = [dict(lr=check_nonneg(op, "lr", lr), max_iter=max_iter, max_eval=max_eval,
                                  tolerance_grad=check_nonneg(op, "tolerance_grad", tolerance_grad),
                                  tolerance_change=check_nonneg(op, "tolerance_change", tolerance_change),
                                  history_size=check_int(op, "history_size", history_size, minimum=1),
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

    @_profiler.traced(cat="optimizer")
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
