# The thread count is one process-wide setting: set_num_threads() in any OS thread (the main thread, a
# threading.Thread training in the background, a thread that was already running) reaches the parallel
# regions of every other thread, and get_num_threads() reports it everywhere. _C._threads_in_region() is a
# private probe: the team size of a parallel region opened the way every kernel opens its regions.
import threading

import numpy as np
import pytest

import cnnkit
from cnnkit import _C, ops


def _in_worker(fn):
    """Runs fn() in a new threading.Thread and returns its result (re-raising what it raised)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001  re-raised in the calling thread
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    assert not t.is_alive(), "worker thread did not finish"
    if "error" in out:
        raise out["error"]
    return out["value"]


def _probe():
    return cnnkit.get_num_threads(), _C._threads_in_region()


@pytest.mark.parametrize("n", [1, 3, 2])
def test_main_thread_setting_reaches_a_new_worker_thread(threads, n):
    threads(n)
    assert _probe() == (n, n)
    assert _in_worker(_probe) == (n, n)


@pytest.mark.parametrize("n", [1, 3])
def test_worker_thread_setting_reaches_the_main_thread(threads, n):
    threads(2)
    _in_worker(lambda: cnnkit.set_num_threads(n))
    assert _probe() == (n, n)
    assert _in_worker(_probe) == (n, n)  # and a third thread


def test_setting_reaches_a_thread_that_was_already_running(threads):
    threads(2)
    started, go, out = threading.Event(), threading.Event(), {}

    def run():
        out["before"] = _probe()
        started.set()
        go.wait(60)
        out["after"] = _probe()

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    threads(1)
    go.set()
    t.join(60)
    assert out == {"before": (2, 2), "after": (1, 1)}


def test_kernel_in_a_worker_thread_uses_the_main_thread_setting(threads):
    # conv2d_bwd_weight sums one partial dw per thread in thread order, so its last bits depend on the team
    # size: the bits a worker thread gets show which count its kernel ran with.
    g = np.random.default_rng(3)
    x = g.standard_normal((16, 8, 20, 20)).astype(np.float32)
    dy = g.standard_normal((16, 8, 20, 20)).astype(np.float32)

    def grad():
        return ops.conv2d_bwd_weight(dy, x, (8, 8, 3, 3), padding=1)

    threads(2)
    two = grad()
    threads(1)
    one = grad()
    assert not np.array_equal(one, two), "data must make the 1- and 2-thread sums differ for this test to see"
    np.testing.assert_array_equal(_in_worker(grad), one)
    threads(2)
    np.testing.assert_array_equal(_in_worker(grad), two)
