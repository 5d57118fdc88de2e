"""The machine, libraries and settings a report is measured under (CPU and GPU headers, JSON 'machine')."""
import math
import os
import platform
from pathlib import Path

import cnnkit
import numpy as np
import torch

from .env import _ENV_KEYS, ENV_AT_START


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loaded_libs(*needles):
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if len(ln.split()) >= 6}
    except OSError:
        return []
    return sorted(p for p in paths if any(n in os.path.basename(p) for n in needles))


def _read(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _numpy_hugepage():
    try:
        from numpy._core.multiarray import _get_madvise_hugepage
    except ImportError:
        try:
            from numpy.core.multiarray import _get_madvise_hugepage
        except ImportError:
            return None
    return bool(_get_madvise_hugepage())


def machine_info(args):
    return {
        "cnnkit": cnnkit.build_info(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "import_order": args.import_order,
        "env_at_start": ENV_AT_START,
        "env_after_imports": {k: os.environ.get(k) for k in _ENV_KEYS},
        "openmp_runtime": loaded_libs("gomp", "iomp", "libomp"),
        # libgomp reads its env once, when the first of the two libraries loads it
        "omp_wait_policy_effective": (ENV_AT_START["OMP_WAIT_POLICY"] if args.import_order == "torch-first"
                                      else os.environ.get("OMP_WAIT_POLICY")) or "unset (libgomp default)",
        "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "numpy_madvise_hugepage": _numpy_hugepage(),
        "torch_thp_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
        "cases_file": str(args.cases),
    }


# ---------------------------------------------------------------- main

def _warn_load(when, loadavg, ncpu):
    if loadavg and ncpu and loadavg[0] > 0.5 * ncpu:
        print(f"NOTE: 1-min load average {loadavg[0]:.2f} {when} on {ncpu} cpus: other processes share the "
              f"machine, so times are inflated and multi-thread figures depressed; compare ratios, or rerun idle")


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def cuda_info(args):
    import cupy
    props = torch.cuda.get_device_properties(0)
    return {
        "cnnkit": cnnkit.build_info(),
        "cnnkit_cuda_status": cnnkit.cuda.status(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
        "gpu": props.name,
        "gpu_memory_gib": props.total_memory / 2**30,
        "sm_count": props.multi_processor_count,
        "hbm_gbs_assumed": args.hbm_gbs,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cases_file": str(args.cases),
    }
