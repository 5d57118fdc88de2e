"""The CUDA kernels' own source, run on the CPU under the host emulation of tools/cuda_emu, against the CPU
kernels. This checks the .cu files' index math, tiling, split-K, Philox streams, reductions and control flow on
machines with no GPU (CI among them). It is no substitute for tests/test_cuda_ops.py on a real GPU: it cannot
see memory-model, occupancy or architecture-specific bugs."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = ROOT / "tools" / "cuda_emu" / "run.sh"


@pytest.mark.skipif(not RUN.exists(), reason="tools/cuda_emu is not in this checkout")
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler for the emulation")
def test_cuda_kernels_under_host_emulation_match_cpu():
    proc = subprocess.run(["bash", str(RUN)], capture_output=True, text=True, timeout=1500,
                          env=dict(os.environ, PYTHON=sys.executable))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "FAIL" not in out, out[-6000:]
    assert "ALL OK" in out.splitlines()[-1], out[-2000:]
