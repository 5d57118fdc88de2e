"""Process-wide runtime settings and facts: kernel threads, the build's description, the version."""
from . import _C, cuda

__version__ = _C.build_info()["version"]


def set_num_threads(n):
    """Set the number of threads every cnnkit kernel uses (OpenMP; the BLAS runs single-threaded inside).

    Process-wide: it applies to kernels called from any Python thread, not only the calling one."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _C.set_num_threads(n)


def get_num_threads():
    """Number of threads cnnkit kernels use (the process-wide setting, the same in every thread)."""
    return _C.get_num_threads()


def build_info():
    """Facts about this build: version, cuda (compiled in), cuda_archs, isa (the GEMM micro-kernel
    in use: avx512, avx2 or generic; CNNKIT_ISA overrides CPUID), isa_supported, openmp, simd, num_threads,
    malloc ("retain": glibc keeps freed memory for reuse instead of giving it back, so a training loop does not
    fault its pages in again every step; CNNKIT_MALLOC=default or the user's own MALLOC_* settings leave
    glibc's defaults)."""
    info = dict(_C.build_info())
    info["cuda_available"] = cuda.is_available()
    return info
