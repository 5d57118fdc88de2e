"""The threading and allocator environment variables the report shows, as they were before cnnkit or torch
was imported (cnnkit sets defaults for some of them when it loads)."""
import os

_ENV_KEYS = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "THP_MEM_ALLOC_ENABLE")
ENV_AT_START = {k: os.environ.get(k) for k in _ENV_KEYS}  # as the user set it, before cnnkit's setdefaults
