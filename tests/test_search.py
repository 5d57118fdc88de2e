# ck.search: samplers, random and coarse-to-fine search on an objective with a known optimum, the quit-early
# marking, parallel workers equal to serial, the thread budget, the table and plot, and `cnnkit search`.
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnkit.search import Choice, LogUniform, Uniform, coarse_to_fine, random_search


def bowl(params, epochs):
    """A known optimum at lr = 10**-2.5, wd = 0.3; more epochs sharpen the value. lr > 0.1 'explodes'."""
    if params["lr"] > 0.1:
        return {"val_acc": None, "stopped": "the loss passed 3 times its initial value"}
    d = (math.log10(params["lr"]) + 2.5) ** 2 + (params["wd"] - 0.3) ** 2
    return {"val_acc": 1.0 - d / (1 + 0.1 * epochs), "stopped": None}


SPACE = {"lr": LogUniform(1e-5, 1.0), "wd": Uniform(0.0, 1.0)}


def test_samplers_stay_in_range_and_log_uniform_is_uniform_in_log(rng):
    lu = np.array([LogUniform(1e-4, 1e-1).sample(rng) for _ in range(4000)])
    assert lu.min() >= 1e-4 and lu.max() <= 1e-1
    assert abs(np.median(np.log10(lu)) + 2.5) < 0.1          # the median sits at the geometric middle
    u = np.array([Uniform(2.0, 3.0).sample(rng) for _ in range(4000)])
    assert u.min() >= 2 and u.max() <= 3 and abs(u.mean() - 2.5) < 0.03
    assert {Choice(["a", "b"]).sample(rng) for _ in range(50)} == {"a", "b"}
    with pytest.raises(ValueError, match="LogUniform: need 0 < low < high"):
        LogUniform(0.0, 1.0)
    with pytest.raises(ValueError, match="Uniform: high must be > low"):
        Uniform(1.0, 1.0)


def test_coarse_to_fine_narrows_around_the_best_and_finds_the_optimum():
    res = coarse_to_fine(bowl, SPACE, coarse_trials=30, coarse_epochs=1, fine_trials=15, fine_epochs=3, top_k=3,
                         seed=0, workers=1)
    coarse = [t for t in res.trials if t["stage"] == "coarse"]
    fine = [t for t in res.trials if t["stage"] == "fine"]
    assert len(coarse) == 30 and len(fine) == 15 and all(t["epochs"] == 3 for t in fine)
    # the fine ranges are narrower and hold every fine trial
    fs = res.fine_space
    assert math.log(fs["lr"].high / fs["lr"].low) < math.log(1.0 / 1e-5)
    assert all(fs["lr"].low <= t["params"]["lr"] <= fs["lr"].high for t in fine)
    best = res.best
    assert best["stage"] == "fine"
    assert abs(math.log10(best["params"]["lr"]) + 2.5) < 0.5 and abs(best["params"]["wd"] - 0.3) < 0.2
    # exploded trials are marked and sorted last
    quit = [t for t in res.trials if t["stopped"]]
    assert quit and all(t["params"]["lr"] > 0.1 for t in quit)
    assert res.sorted()[-len(quit):] == sorted(quit, key=res._key)[-len(quit):]


def test_parallel_workers_equal_serial_and_the_thread_budget_is_enforced(tmp_path):
    serial = random_search(bowl, SPACE, trials=6, epochs=1, seed=3, workers=1)
    parallel = random_search(bowl, SPACE, trials=6, epochs=1, seed=3, workers=2, threads_per_worker=1)
    assert [t["params"] for t in serial.trials] == [t["params"] for t in parallel.trials]
    assert [t["val_acc"] for t in serial.trials] == [t["val_acc"] for t in parallel.trials]
    cores = os.cpu_count()
    with pytest.raises(ValueError, match="would oversubscribe"):
        random_search(bowl, SPACE, trials=2, workers=cores, threads_per_worker=2)
    table = parallel.table().splitlines()
    assert table[0].split()[:3] == ["stage", "trial", "epochs"] and len(table) == 7
    assert "quit early" in parallel.table() or all(not t["stopped"] for t in parallel.trials)
    png = parallel.plot(str(tmp_path / "s.png"))
    assert open(png, "rb").read(4) == b"\x89PNG"


def test_cnnkit_search_command(tmp_path):
    cfg = tmp_path / "search.toml"
    cfg.write_text('seed = 0\n[search]\ntrials = 3\nepochs = 1\nfine_trials = 1\nfine_epochs = 1\nworkers = 1\n'
                   '[search.space]\n"optimizer.lr" = {dist = "log_uniform", low = 1e-4, high = 1e-2}\n')
    r = subprocess.run([sys.executable, "-m", "cnnkit", "search", "--config", str(cfg), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "o" / "search.json").read_text())
    assert len(doc["trials"]) == 4 and all(t["val_acc"] is not None for t in doc["trials"])
    assert os.path.exists(tmp_path / "o" / "search.png") and "best:" in r.stdout
    assert "epoch 1/1" not in r.stdout  # trials train quietly
    bad = tmp_path / "bad.toml"
    bad.write_text('[search]\ntrials = 2\nspacey = 1\n[search.space]\nlr = {dist = "log_uniform", low = 1, high = 2}\n')
    r = subprocess.run([sys.executable, "-m", "cnnkit", "search", "--config", str(bad)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "unknown key 'search.spacey'" in r.stderr


def test_an_in_process_search_gives_the_thread_count_back(threads):
    # workers=1 runs the trials here with threads_per_worker threads; the caller's setting is restored after
    threads(2)
    seen = []

    def objective(params, epochs):
        import cnnkit
        seen.append(cnnkit.get_num_threads())
        return bowl(params, epochs)

    random_search(objective, SPACE, trials=2, epochs=1, seed=0, workers=1, threads_per_worker=1)
    import cnnkit
    assert seen == [1, 1] and cnnkit.get_num_threads() == 2


def test_an_executor_running_trials_in_this_process_gives_the_thread_count_back(threads):
    # A thread-pool executor (or Dask with processes=False) runs trials here, several at once: each trial sees
    # threads_per_worker, and the caller's count comes back when the last one ends, however they interleave.
    import concurrent.futures as cf
    import threading

    import cnnkit
    threads(2)
    seen, barrier = [], threading.Barrier(2)

    def objective(params, epochs):
        barrier.wait(timeout=30)       # two trials inside at once
        seen.append(cnnkit.get_num_threads())
        barrier.wait(timeout=30)
        return bowl(params, epochs)

    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        got = random_search(objective, SPACE, trials=4, epochs=1, seed=0, executor=pool, threads_per_worker=1)
    assert seen == [1, 1, 1, 1] and cnnkit.get_num_threads() == 2
    assert [t["val_acc"] for t in got.trials] == \
        [t["val_acc"] for t in random_search(bowl, SPACE, trials=4, epochs=1, seed=0, workers=1).trials]
