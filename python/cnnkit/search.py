"""Hyperparameter search (CS231n "Hyperparameter optimization"): random search over uniform and
log-uniform ranges, coarse-to-fine refinement, the quit-early rule, parallel worker processes with a
thread budget, and the results as a sorted table and a scatter plot per hyperparameter.

An objective is a picklable function ``objective(params, epochs) -> dict`` returning at least the
metric searched on (e.g. {"val_acc": 0.93}); ``stopped`` (a reason string or None) marks a trial that hit
the quit-early rule (`cnnkit search` trains its trials with ``quit_factor=TRIAL_QUIT_FACTOR``, 3, where the
Trainer's own default is off: pass it to your own objective's Trainer too). Workers are started with the
"spawn" method (forking a process whose OpenMP runtime is running is unsafe) and each gets
``threads_per_worker`` cnnkit threads, so that workers x threads never exceeds the cores.
``executor=`` runs the trials on any concurrent.futures.Executor instead (mpi4py.futures.MPIPoolExecutor across
MPI ranks, a Dask cluster's ``client.get_executor()``); each trial then sets ``threads_per_worker`` itself
where it runs.
"""
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import threading

import numpy as np

TRIAL_QUIT_FACTOR = 3.0   # a trial whose loss passes 3x its initial value is stopped (CS231n's quit-early rule)


class Uniform:
    def __init__(self, low, high):
        if not high > low:
            raise ValueError(f"Uniform: high must be > low, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)

    def sample(self, rng):
        return float(rng.uniform(self.low, self.high))

    def around(self, values, shrink):
        """A narrower range around `values` (the best trials' values), for the fine stage."""
        lo, hi = min(values), max(values)
        half = max(hi - lo, (self.high - self.low) * shrink) / 2
        mid = (lo + hi) / 2
        return type(self)(max(self.low, mid - half), min(self.high, mid + half))

    def __repr__(self):
        return f"{type(self).__name__}({self.low:g}, {self.high:g})"


class LogUniform(Uniform):
    """Uniform in log space: the right prior for learning rates and regularisation strengths."""

    def __init__(self, low, high):
        if not (low > 0 and high > low):
            raise ValueError(f"LogUniform: need 0 < low < high, got low={low}, high={high}")
        super().__init__(low, high)

    def sample(self, rng):
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def around(self, values, shrink):
        lo, hi = math.log(min(values)), math.log(max(values))
        span = math.log(self.high) - math.log(self.low)
        half = max(hi - lo, span * shrink) / 2
        mid = (lo + hi) / 2
        return LogUniform(max(self.low, math.exp(mid - half)), min(self.high, math.exp(mid + half)))


class Choice:
    def __init__(self, options):
        self.options = list(options)
        if not self.options:
            raise ValueError("Choice: options is empty")

    def sample(self, rng):
        return self.options[int(rng.integers(len(self.options)))]

    def around(self, values, shrink):
        return Choice(sorted(set(values), key=self.options.index))

    def __repr__(self):
        return f"Choice({self.options})"


def _sample(space, rng):
    return {k: d.sample(rng) for k, d in space.items()}


def _init_worker(threads):
    from ._runtime import set_num_threads
    set_num_threads(threads)


_in_process = {"lock": threading.Lock(), "running": 0, "before": None}


class _WithThreads:
    """The objective run with a cnnkit thread count, for executors whose workers cnnkit does not start. The
    count is the process's (OpenMP's), so when the executor runs trials as threads of the caller's process
    (a thread pool, Dask with processes=False) the first trial to start saves the caller's count and the last
    to end restores it; a worker process simply keeps it."""

    def __init__(self, objective, threads):
        self.objective, self.threads = objective, threads

    def __call__(self, params, epochs):
        from ._runtime import get_num_threads, set_num_threads
        state = _in_process
        with state["lock"]:
            if state["running"] == 0:
                state["before"] = get_num_threads()
            state["running"] += 1
            set_num_threads(self.threads)
        try:
            return self.objective(params, epochs)
        finally:
            with state["lock"]:
                state["running"] -= 1
                if state["running"] == 0:
                    set_num_threads(state["before"])


def _gather(futures, stage, epochs):
    results = []
    for fut in cf.as_completed(futures):
        i, params = futures[fut]
        results.append(_record(i, stage, params, epochs, fut.result()))
    return sorted(results, key=lambda r: r["trial"])


def _run_trials(objective, trials, epochs, workers, threads_per_worker, stage, executor=None):
    results = []
    if executor is not None:
        job = _WithThreads(objective, threads_per_worker)
        return _gather({executor.submit(job, params, epochs): (i, params) for i, params in enumerate(trials)},
                       stage, epochs)
    if workers <= 1:
        from ._runtime import get_num_threads, set_num_threads
        before = get_num_threads()
        set_num_threads(threads_per_worker)
        try:
            for i, params in enumerate(trials):
                results.append(_record(i, stage, params, epochs, objective(params, epochs)))
        finally:
            set_num_threads(before)   # the caller's setting, as it was
        return results
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(threads_per_worker,)) as pool:
        return _gather({pool.submit(objective, params, epochs): (i, params) for i, params in enumerate(trials)},
                       stage, epochs)


def _record(i, stage, params, epochs, out):
    if not isinstance(out, dict):
        raise TypeError(f"search: the objective must return a dict of metrics, got {type(out).__name__}")
    return {"trial": i, "stage": stage, "epochs": epochs, "params": dict(params), **out}


class SearchResult:
    def __init__(self, trials, metric, mode):
        self.trials, self.metric, self.mode = trials, metric, mode

    def _key(self, t):
        v = t.get(self.metric)
        bad = v is None or t.get("stopped") or (isinstance(v, float) and math.isnan(v))
        return (1, 0.0) if bad else (0, -v if self.mode == "max" else v)

    def sorted(self):
        return sorted(self.trials, key=self._key)

    @property
    def best(self):
        return self.sorted()[0]

    def table(self):
        names = sorted({k for t in self.trials for k in t["params"]})
        head = ["stage", "trial", "epochs"] + names + [self.metric, "note"]
        rows = []
        for t in self.sorted():
            v = t.get(self.metric)
            rows.append([t["stage"], str(t["trial"]), str(t["epochs"])]
                        + [f"{t['params'][n]:.3g}" if isinstance(t["params"].get(n), float) else str(t["params"].get(n))
                           for n in names]
                        + ["-" if v is None else f"{v:.4f}", "quit early" if t.get("stopped") else ""])
        width = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, width))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, width)) for r in rows]
        return "\n".join(lines)

    def to_json(self, path):
        with open(path, "w") as f:
            json.dump({"metric": self.metric, "mode": self.mode, "trials": self.trials}, f, indent=1, default=str)

    def plot(self, path):
        """Scatter of the metric against each hyperparameter (log axis for positive ranges spanning decades)."""
        from .train.plots import _plt
        plt = _plt()
        names = sorted({k for t in self.trials for k in t["params"] if isinstance(t["params"][k], (int, float))})
        fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4 * max(1, len(names)), 3.5), squeeze=False)
        for ax, n in zip(axes[0], names):
            for stage, marker in (("coarse", "o"), ("fine", "^")):
                pts = [(t["params"][n], t.get(self.metric)) for t in self.trials
                       if t["stage"] == stage and t.get(self.metric) is not None and not t.get("stopped")]
                if pts:
                    xs, ys = zip(*pts)
                    ax.scatter(xs, ys, marker=marker, label=stage)
            vals = [t["params"][n] for t in self.trials]
            if min(vals) > 0 and max(vals) / min(vals) > 20:
                ax.set_xscale("log")
            ax.set_xlabel(n)
            ax.set_ylabel(self.metric)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def random_search(objective, space, trials=10, epochs=3, seed=0, workers=None, threads_per_worker=1,
                  metric="val_acc", mode="max", executor=None):
    """Sample `trials` points of `space` (name -> Uniform / LogUniform / Choice) and run each for `epochs`.
    executor: any concurrent.futures.Executor to run the trials on (default: cnnkit's own process pool)."""
    return coarse_to_fine(objective, space, coarse_trials=trials, coarse_epochs=epochs, fine_trials=0, seed=seed,
                          workers=workers, threads_per_worker=threads_per_worker, metric=metric, mode=mode,
                          executor=executor)


def coarse_to_fine(objective, space, coarse_trials=10, coarse_epochs=2, fine_trials=5, fine_epochs=5, top_k=3,
                   shrink=0.2, seed=0, workers=None, threads_per_worker=1, metric="val_acc", mode="max",
                   executor=None):
    """A coarse stage (many short trials over the full ranges), then a fine stage over ranges narrowed
    around the `top_k` best coarse trials (at least `shrink` of each original span), run longer.
    executor: any concurrent.futures.Executor to run the trials on (default: cnnkit's own process pool of
    `workers`); the results are the same whichever runs them."""
    if mode not in ("max", "min"):
        raise ValueError(f"search: mode must be 'max' or 'min', got {mode!r}")
    for k, d in space.items():
        if not hasattr(d, "sample"):
            raise TypeError(f"search: space[{k!r}] must be Uniform, LogUniform or Choice, got {type(d).__name__}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(f"search: executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    cores = os.cpu_count() or 1
    workers = workers or max(1, cores // threads_per_worker)
    if executor is None and workers * threads_per_worker > cores:
        raise ValueError(f"search: workers x threads_per_worker = {workers * threads_per_worker} would oversubscribe "
                         f"the {cores} cores")
    rng = np.random.default_rng(seed)
    coarse = _run_trials(objective, [_sample(space, rng) for _ in range(coarse_trials)], coarse_epochs, workers,
                         threads_per_worker, "coarse", executor)
    result = SearchResult(coarse, metric, mode)
    if fine_trials:
        top = [t for t in result.sorted()[:top_k] if not t.get("stopped")] or result.sorted()[:top_k]
        fine_space = {k: d.around([t["params"][k] for t in top], shrink) for k, d in space.items()}
        fine = _run_trials(objective, [_sample(fine_space, rng) for _ in range(fine_trials)], fine_epochs, workers,
                           threads_per_worker, "fine", executor)
        for t in fine:
            t["trial"] += len(coarse)
        result = SearchResult(coarse + fine, metric, mode)
        result.fine_space = fine_space
    return result


# ---------------------------------------------------------------- the `cnnkit search` command

_DISTS = {"uniform": Uniform, "log_uniform": LogUniform}


def config_objective(base_cfg, params, epochs):
    """Train the config `base_cfg` with dotted-key overrides `params` for `epochs`; -> metrics. Module-level
    so that worker processes can unpickle it."""
    import copy

    from .run import run_training
    cfg = copy.deepcopy(base_cfg)
    for key, v in params.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    cfg["epochs"] = epochs
    cfg["plots"] = False
    cfg["out"] = os.path.join(base_cfg["out"], "trials", "-".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                               for k, v in sorted(params.items())) + f"-e{epochs}")
    trainer, result = run_training(cfg, log=lambda *a: None, progress=False, quit_factor=TRIAL_QUIT_FACTOR)
    val = trainer.history.epochs[-1].get("val_acc") if trainer.history.epochs else None
    return {"val_acc": val, "test_acc": result["test_acc"], "stopped": result["stop_reason"]}


class _Bound:
    """config_objective with its base config bound; picklable (a functools.partial would do too)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, params, epochs):
        return config_objective(self.cfg, params, epochs)


def run_search_cli(path, out=None, workers=None):
    from .config import ConfigError, load_config, read_toml
    raw = read_toml(path)
    s = raw.pop("search", None)
    if not isinstance(s, dict) or "space" not in s:
        raise ConfigError("config: a search config needs a [search] table with a [search.space] table")
    allowed = {"trials", "epochs", "fine_trials", "fine_epochs", "top_k", "workers", "threads_per_worker", "seed",
               "space"}
    for k in s:
        if k not in allowed:
            raise ConfigError(f"config: unknown key 'search.{k}'; expected one of {sorted(allowed)}")
    space = {}
    for name, d in s["space"].items():
        if not isinstance(d, dict) or d.get("dist") not in _DISTS or "low" not in d or "high" not in d:
            raise ConfigError(f"config: 'search.space.{name}' must be {{dist = 'uniform'|'log_uniform', low, high}}")
        try:
            space[name] = _DISTS[d["dist"]](d["low"], d["high"])
        except ValueError as e:
            raise ConfigError(f"config: 'search.space.{name}': {e}") from None
    from .config import SCHEMA, _check
    _check(raw, SCHEMA)  # the rest is a train config
    base = load_config(None)
    for k, v in raw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k].update(v)
        else:
            base[k] = v
    base["out"] = out or base.get("out") or "runs/search"
    os.makedirs(base["out"], exist_ok=True)
    res = coarse_to_fine(_Bound(base), space, coarse_trials=s.get("trials", 8), coarse_epochs=s.get("epochs", 2),
                         fine_trials=s.get("fine_trials", 4), fine_epochs=s.get("fine_epochs", 4),
                         top_k=s.get("top_k", 3), seed=s.get("seed", 0), workers=workers or s.get("workers"),
                         threads_per_worker=s.get("threads_per_worker", 1))
    print(res.table())
    res.to_json(os.path.join(base["out"], "search.json"))
    res.plot(os.path.join(base["out"], "search.png"))
    print(f"best: {res.best['params']} -> val_acc {res.best.get('val_acc')}; results in {base['out']}")
    return 0
