# Shared fixtures: a thread-count fixture that restores cnnkit's setting after a test, a seeded numpy
# generator, and a runner for calls that might kill the process (they run in a child process with a
# capped address space, so a crash fails one test instead of the whole session).
import os
import resource
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

import cnnkit


@pytest.fixture
def threads():
    """Yields cnnkit.set_num_threads; the thread count in force before the test is restored after it."""
    before = cnnkit.get_num_threads()
    yield cnnkit.set_num_threads
    cnnkit.set_num_threads(before)


@pytest.fixture
def rng(request):
    # Seeded per test so a failure reproduces; the name keeps tests independent of each other's draws.
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


_ADDRESS_SPACE = 6 * 2**30  # bytes: enough for Python, numpy and OpenBLAS; far below any runaway buffer


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE, _ADDRESS_SPACE))


@pytest.fixture
def run_isolated(tmp_path):
    """Run a Python snippet in a child process (cwd outside the repo, address space capped). Returns the
    CompletedProcess; rc != 0 with a signal means the call crashed the interpreter."""
    def run(code, timeout=120):
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout, preexec_fn=_cap_memory,
                              env={**os.environ, "OMP_NUM_THREADS": "2"})
    return run
