"""cnnkit.profiler: where the time of a training step goes, as torch.profiler shows it.

``with profile() as prof:`` records, on every thread, a range for each layer's forward and backward, each
compiled-kernel call of cnnkit.ops, each optimizer step, each batch a DataLoader makes, and each
``record_function`` range; ``prof.table()`` aggregates them by name (self time = the range less the ranges
inside it) and ``prof.export_chrome_trace(path)`` writes the Trace Event Format that chrome://tracing and
Perfetto open (docs/profiling.md). Outside a profile every hook is one test of the module global ``active``.
Kernel times are host times: CuPy kernels are queued, not waited for, so on a GPU they time the launch.
"""
import contextlib
import functools
import json
import os
import threading
import time

from ._io import atomic_write

__all__ = ["profile", "record_function", "ProfileRow", "KeyAverages"]

active = None   # the profile being recorded, or None: the single check every hook in cnnkit makes

_clock = time.perf_counter_ns


class _Span:
    """One open range: the object and phase it times (so a layer wrapped twice gets one range), its start, and
    what the ranges inside it have taken (time, and the floating-point operations they know)."""

    __slots__ = ("name", "cat", "obj", "args", "t0", "child_ns", "child_flops", "flops")

    def __init__(self, name, cat, obj, args, flops):
        self.name, self.cat, self.obj, self.args, self.flops = name, cat, obj, args, flops
        self.child_ns, self.child_flops = 0, None
        self.t0 = _clock()


def _stack(prof):
    tid = threading.get_ident()
    st = prof._stacks.get(tid)
    if st is None:
        st = prof._stacks[tid] = []
        prof._threads[tid] = threading.current_thread().name
    return st


def _begin(prof, name, cat, obj=None, args=None, flops=None):
    sp = _Span(name, cat, obj, args, flops)
    _stack(prof).append(sp)
    return sp


def _end(prof, sp):
    t1 = _clock()
    st = _stack(prof)
    if st and st[-1] is sp:
        st.pop()
    elif sp in st:
        st.remove(sp)
    if prof._stopped:   # closed after the profile ended (a loader thread): not part of it
        return
    dur = t1 - sp.t0
    flops = sp.flops if sp.flops is not None else sp.child_flops
    if st:
        parent = st[-1]
        parent.child_ns += dur
        if flops is not None:
            parent.child_flops = flops + (parent.child_flops or 0)
    prof._events.append((sp.name, sp.cat, threading.get_ident(), sp.t0, dur, dur - sp.child_ns, flops, sp.args))


def _run(prof, name, cat, fn, args, kwargs, flops=None):
    """fn(*args, **kwargs) inside a range."""
    sp = _begin(prof, name, cat, flops=flops)
    try:
        return fn(*args, **kwargs)
    finally:
        _end(prof, sp)


# ---------------------------------------------------------------- hooks (called only while a profile is active)
def _is_container(layer):
    """A Sequential / Graph (its nodes) or a ck.Module (its code): its flops are its layers', found by running it,
    which the profiler must not do; they are summed from the ranges inside instead."""
    d = layer.__dict__
    return "_nodes" in d or "_modules" in d


def _layer_flops(layer, args, out):
    try:
        fl = int(layer.flops([tuple(a.shape) for a in args], tuple(out.shape)))
    except Exception:   # a custom layer's flops() may not take these shapes: the kernels' count stands
        return None
    return fl if fl > 0 else None


def _begin_layer(prof, layer, phase, node=None):
    """A "<Type>.<phase>" range of `layer`, its name in its model (`node`, else its own name) in the trace."""
    name = node if node is not None else layer.name
    return _begin(prof, f"{type(layer).__name__}.{phase}", phase, layer, {"layer": name} if name else None)


def timed(layer, phase, fn, node=None):
    """`fn` (a bound forward or backward of `layer`) as a callable that runs inside a "<Type>.<phase>" range.
    A layer already timed in this phase on this thread (a model's own backward wrapping what its parent's loop
    wrapped) gets no second range. `node`: the layer's name in its model, shown in the trace."""
    prof = active

    def call(*args, **kwargs):
        st = _stack(prof)
        if st and st[-1].obj is layer and st[-1].cat == phase:
            return fn(*args, **kwargs)
        sp = _begin_layer(prof, layer, phase, node)
        try:
            out = fn(*args, **kwargs)
            if phase == "forward" and not _is_container(layer) and hasattr(out, "shape"):
                sp.flops = _layer_flops(layer, args, out)
            return out
        finally:
            _end(prof, sp)
    return call


class _LayerRange:
    def __init__(self, prof, layer, phase):
        self.prof, self.layer, self.phase = prof, layer, phase

    def __enter__(self):
        self.sp = _begin_layer(self.prof, self.layer, self.phase)

    def __exit__(self, *exc):
        _end(self.prof, self.sp)
        return False


_NO_RANGE = contextlib.nullcontext()


def layer_range(layer, phase):
    """A "<Type>.<phase>" range around a block that runs `layer` (a model whose layers a recording calls one by
    one); outside a profile, a context that does nothing."""
    return _NO_RANGE if active is None else _LayerRange(active, layer, phase)


def node_backward(what, fn, *args):
    """A recorded node's backward routine `fn(*args)` in a range: what is the layer of a layer call (its
    "<Type>.backward" range) or the name of a functional op ("F.linear" -> "F.linear.backward")."""
    if isinstance(what, str):
        return _run(active, f"{what}.backward", "backward", fn, args, {})
    return timed(what, "backward", fn)(*args)


def traced(name=None, cat="function"):
    """Decorator: each call inside a range (`name`, or "<class of self>.<function>" for a method). Outside a
    profile the wrapper costs one test of ``active`` and the call; for calls made once a step or a batch."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            prof = active
            if prof is None:
                return fn(*args, **kwargs)
            label = name if name is not None else f"{type(args[0]).__name__}.{fn.__name__}"
            return _run(prof, label, cat, fn, args, kwargs)
        return wrapper
    return deco


# A kernel's count is its GEMM's 2 * M * N * K (as torch.utils.flop_counter counts): M * N the output (or output
# gradient) elements, K = C/groups * R * S for the convolutions, whatever algorithm runs. A bias add is left out,
# which Conv2d.flops and Linear.flops (the layers' rows) count.
def _flops_conv2d_fwd(x, w, b, y, *rest):
    return 2 * y.size * w.shape[1] * w.shape[2] * w.shape[3]


def _flops_conv2d_bwd_data(dy, w, *rest):
    return 2 * dy.size * w.shape[1] * w.shape[2] * w.shape[3]


def _flops_conv2d_bwd_weight(dy, x, dw, *rest):
    return 2 * dy.size * dw.shape[1] * dw.shape[2] * dw.shape[3]


def _flops_matmul(a, b, c, trans_a, *rest):
    return 2 * c.size * (a.shape[0] if trans_a else a.shape[1])


_KERNEL_FLOPS = {"conv2d_fwd": _flops_conv2d_fwd, "conv2d_bwd_data": _flops_conv2d_bwd_data,
                 "conv2d_bwd_weight": _flops_conv2d_bwd_weight, "matmul": _flops_matmul}


class _TimedKernels:
    """A kernel module (cnnkit._C or ops._cuda) whose functions each run inside a range named after the kernel,
    with its floating-point operations where they are known (the convolutions and matmul: 2 * M * N * K)."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        fn = getattr(self._module, name)   # at every call, not cached: the module's functions may be replaced
        if not callable(fn):
            return fn
        count = _KERNEL_FLOPS.get(name)

        def kernel(*args, **kwargs):
            prof = active
            if prof is None:   # the profile ended on another thread between the lookup and the call
                return fn(*args, **kwargs)
            return _run(prof, name, "kernel", fn, args, kwargs, flops=count(*args) if count else None)
        return kernel


_timed_modules = {}


def kernels(module):
    """The timed stand-in for a kernel module (one per module)."""
    t = _timed_modules.get(id(module))
    if t is None:
        t = _timed_modules[id(module)] = _TimedKernels(module)
    return t


# ---------------------------------------------------------------- the public face
class record_function(contextlib.ContextDecorator):
    """A named range of your own, as ``torch.profiler.record_function``: ``with record_function("loss"): ...``
    (or as a decorator). Outside a profile it records nothing."""

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise TypeError(f"record_function: name must be a non-empty str, got {name!r}")
        self.name = name
        self._local = threading.local()   # the ranges this object has open, per thread (a decorator is shared)

    def __enter__(self):
        prof = active
        self._local.__dict__.setdefault("open", []).append(
            (prof, _begin(prof, self.name, "user") if prof is not None else None))
        return self

    def __exit__(self, *exc):
        prof, sp = self._local.open.pop()
        if sp is not None:
            _end(prof, sp)
        return False


class ProfileRow:
    """One row of key_averages(): every range of one name. Times in seconds; ``self_percent`` is the share of
    all self time (all threads); ``flops`` is None where unknown, and ``gflops`` is flops / total_time."""

    __slots__ = ("name", "category", "calls", "self_time", "total_time", "avg_time", "self_percent", "flops",
                 "gflops")

    def __init__(self, name, category, calls, self_time, total_time, self_percent, flops):
        self.name, self.category, self.calls = name, category, calls
        self.self_time, self.total_time = self_time, total_time
        self.avg_time = total_time / calls
        self.self_percent, self.flops = self_percent, flops
        self.gflops = flops / total_time / 1e9 if flops is not None and total_time > 0 else None

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self):
        return (f"ProfileRow({self.name!r}, calls={self.calls}, self_time={self.self_time:.6g}, "
                f"total_time={self.total_time:.6g})")


# sort keys: ours, and torch's names for the same columns
_SORT_KEYS = {"self_time": "self_time", "total_time": "total_time", "avg_time": "avg_time", "calls": "calls",
              "gflops": "gflops", "flops": "flops", "name": "name",
              "self_cpu_time_total": "self_time", "cpu_time_total": "total_time", "cpu_time": "avg_time",
              "count": "calls", "flops_total": "flops"}


def _fmt_time(s):
    if s >= 1.0:
        return f"{s:.3f}s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f}ms"
    return f"{s * 1e6:.3f}us"


class KeyAverages(list):
    """The rows of a profile (a list of ProfileRow); ``.table()`` prints them as torch's key_averages() does."""

    def table(self, sort_by="self_time", row_limit=20):
        """The rows as a text table, largest `sort_by` first ("self_time", "total_time", "avg_time", "calls",
        "gflops", "flops", or "name" A to Z; torch's "self_cpu_time_total", "cpu_time_total", "count" too), at
        most `row_limit` of them (None or -1: all)."""
        op = "profile.table"
        if sort_by not in _SORT_KEYS:
            raise ValueError(f"{op}: sort_by must be one of {sorted(_SORT_KEYS)}, got {sort_by!r}")
        if row_limit is not None and (isinstance(row_limit, bool) or not isinstance(row_limit, int)):
            raise TypeError(f"{op}: row_limit must be an int or None, got {type(row_limit).__name__}")
        if row_limit is not None and row_limit != -1 and row_limit < 1:
            raise ValueError(f"{op}: row_limit must be >= 1 (or -1 or None for all rows), got {row_limit}")
        key = _SORT_KEYS[sort_by]
        if key == "name":
            rows = sorted(self, key=lambda r: r.name)
        else:
            rows = sorted(self, key=lambda r: (getattr(r, key) is not None, getattr(r, key) or 0), reverse=True)
        shown = rows if row_limit in (None, -1) else rows[:row_limit]
        head = ("Name", "Calls", "Self time", "Total time", "Avg time", "Self %", "GFLOP/s")
        body = [(r.name, str(r.calls), _fmt_time(r.self_time), _fmt_time(r.total_time), _fmt_time(r.avg_time),
                 f"{r.self_percent:.2f}%", "" if r.gflops is None else f"{r.gflops:.2f}") for r in shown]
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        line = "  ".join("-" * w for w in widths)

        def fmt(row):
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        total = sum(r.self_time for r in self)
        out = [line, fmt(head), line] + [fmt(r) for r in body] + [line]
        out.append(f"Self time total: {_fmt_time(total)} ({len(shown)} of {len(self)} names, sorted by {sort_by})")
        return "\n".join(out)


class profile:
    """Record what cnnkit does while the block runs: ``with ck.profiler.profile() as prof: ...``, then
    ``print(prof.table())``, ``prof.key_averages()`` or ``prof.export_chrome_trace("trace.json")``.

    One profile at a time: entering a second while one is recording is a RuntimeError. Ranges on other threads
    (a DataLoader's prefetch thread) are recorded while the profile is active, each thread on its own row of the
    trace; a range still open when the block ends is left out.
    """

    def __init__(self):
        self._events = []
        self._stacks = {}
        self._threads = {}
        self._stopped = False
        self._t_start = self._t_end = None

    def __enter__(self):
        global active
        if self._t_start is not None:
            raise RuntimeError("profiler.profile: this profile was already recorded; make a new profile() to record "
                               "again")
        if active is not None:
            raise RuntimeError("profiler.profile: a profile is already recording (profiles do not nest); record "
                               "ranges inside it with ck.profiler.record_function(name)")
        self._t_start = _clock()
        active = self
        return self

    def __exit__(self, *exc):
        global active
        self._t_end = _clock()
        self._stopped = True
        if active is self:
            active = None
        return False

    def _need_done(self, op):
        if self._t_start is None:
            raise RuntimeError(f"profile.{op}: nothing recorded yet; use it as `with profile() as prof:` first")
        if not self._stopped:
            raise RuntimeError(f"profile.{op}: the profile is still recording; call it after the `with` block")

    @property
    def wall_time(self):
        """Seconds from entering the profile to leaving it."""
        self._need_done("wall_time")
        return (self._t_end - self._t_start) / 1e9

    def events(self):
        """Every recorded range as a dict: name, category, thread (threading.get_ident), start and duration in
        nanoseconds (start from entering the profile), self_ns, flops (None where unknown), args."""
        self._need_done("events")
        return [{"name": n, "category": c, "thread": tid, "start_ns": t0 - self._t_start, "duration_ns": dur,
                 "self_ns": own, "flops": fl, "args": args} for n, c, tid, t0, dur, own, fl, args in self._events]

    def key_averages(self):
        """One ProfileRow per range name, in order of first appearance."""
        self._need_done("key_averages")
        rows = {}
        for n, c, _, _, dur, own, fl, _ in self._events:
            r = rows.get(n)
            if r is None:
                r = rows[n] = [c, 0, 0, 0, None]
            r[1] += 1
            r[2] += own
            r[3] += dur
            if fl is not None:
                r[4] = fl + (r[4] or 0)
        total = sum(r[2] for r in rows.values())
        return KeyAverages(ProfileRow(n, c, calls, own / 1e9, dur / 1e9, 100.0 * own / total if total else 0.0, fl)
                           for n, (c, calls, own, dur, fl) in rows.items())

    def table(self, sort_by="self_time", row_limit=20):
        """key_averages().table(sort_by, row_limit): the rows as text (print it)."""
        return self.key_averages().table(sort_by=sort_by, row_limit=row_limit)

    def chrome_trace(self):
        """The Trace Event Format object export_chrome_trace writes: {"traceEvents": [...], ...}."""
        self._need_done("chrome_trace")
        pid = os.getpid()
        events = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "cnnkit"}}]
        events += [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
                   for tid, name in self._threads.items()]
        for n, c, tid, t0, dur, own, fl, args in self._events:
            a = dict(args) if args else {}
            if fl is not None:
                a["flops"] = fl
            events.append({"name": n, "cat": c, "ph": "X", "ts": (t0 - self._t_start) / 1e3, "dur": dur / 1e3,
                           "pid": pid, "tid": tid, "args": a})
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def export_chrome_trace(self, path):
        """Write chrome_trace() as JSON to `path`, atomically (open it in chrome://tracing or ui.perfetto.dev)."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"profile.export_chrome_trace: path must be a str or os.PathLike, got "
                            f"{type(path).__name__}")
        atomic_write(path, json.dumps(self.chrome_trace()).encode())
