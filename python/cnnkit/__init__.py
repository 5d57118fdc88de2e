"""cnnkit: train convolutional networks from Python on fast C++ (OpenMP) and CUDA kernels.

The compiled kernels live in ``cnnkit._C``; ``cnnkit.ops`` is their validated face.
"""
import os as _os

# Thread-control variables are read when each library loads (BUILD-NOTES pitfall 6), so they are set
# before OpenBLAS and libgomp are loaded. Idle OpenMP workers then sleep instead of spinning against
# other thread pools in the process (numpy's BLAS, PyTorch) on small machines. User settings win.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import scipy_openblas32 as _scipy_openblas32  # noqa: E402,F401  loads libscipy_openblas.so for _C

from . import _C  # noqa: E402
from . import cuda, ops  # noqa: E402,F401
from .parameter import FlatBuffer, Parameter  # noqa: E402
from . import data  # noqa: E402,F401  (issue 5: datasets, preprocessing, augmentation, batching)

__version__ = _C.build_info()["version"]


def set_num_threads(n):
    """Set the number of threads every cnnkit kernel uses (OpenMP; the BLAS runs single-threaded inside)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _C.set_num_threads(n)


def get_num_threads():
    """Number of threads cnnkit kernels use."""
    return _C.get_num_threads()


def build_info():
    """Facts about this build: version, cuda (compiled in), cuda_archs, blas, openmp, simd, num_threads."""
    info = dict(_C.build_info())
    info["cuda_available"] = cuda.is_available()
    return info


__all__ = ["ops", "cuda", "Parameter", "FlatBuffer", "set_num_threads", "get_num_threads", "build_info"]
__all__ += ["data"]  # issue 5
