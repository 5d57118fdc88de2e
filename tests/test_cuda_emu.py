"""The CUDA kernels' own source, run on the CPU under the host emulation of tools/cuda_emu, against the CPU
kernels. This checks the .cu files' index math, tiling, split-K, Philox streams, reductions and control flow on
machines with no GPU (CI among them), and, through the strict shim and the audit cases, that no launch has an
illegal configuration or the wrong stream, that empty, offset and huge (> 2^31 elements) inputs work, and that
CUDA errors raise. It is no substitute for the GPU runs of tests/ops/ on a real GPU: it cannot see memory-model,
occupancy or architecture-specific bugs."""
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


RESOURCES = ROOT / "tools" / "cuda_emu" / "check_resources.sh"


@pytest.mark.skipif(not RESOURCES.exists(), reason="tools/cuda_emu is not in this checkout")
@pytest.mark.skipif(shutil.which(os.environ.get("NVCC", "nvcc")) is None, reason="no nvcc to read kernel resources")
def test_cuda_kernels_fit_launch_resources():
    """What the emulation cannot measure: each kernel's static shared memory (<= 48 KiB) and registers (x 256
    threads <= 64K), from ptxas for sm_90 (sm_80 too with `check_resources.sh` and no argument)."""
    proc = subprocess.run(["bash", str(RESOURCES), "90"], capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "FAIL" not in out, out[-6000:]
    assert out.splitlines()[-1] == "resources: ALL OK", out[-2000:]
    assert sum(line.startswith("ok sm_90") for line in out.splitlines()) >= 50, out[-2000:]
