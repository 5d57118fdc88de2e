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
    """Facts about this build: version, cuda (compiled in), cuda_archs, openmp, simd, num_threads;
    isa (the GEMM micro-kernel in use: avx512, avx2 or generic), module_isa (the level every kernel of the
    loaded module was compiled for, or native), isa_supported (the levels this CPU runs, best first),
    isa_compiled (the kernel modules this install holds), gemm_kernels (the micro-kernels of the loaded
    module this CPU runs), build_flags (the kernels' compiler flags); CNNKIT_ISA overrides the choice.
    malloc ("retain": glibc keeps freed memory for reuse instead of giving it back, so a training loop does
    not fault its pages in again every step; CNNKIT_MALLOC=default or the user's own MALLOC_* settings leave
    glibc's defaults)."""
    info = dict(_C.build_info())
    info["isa_supported"] = ",".join(_C.SUPPORTED)   # what the CPU runs
    info["isa_compiled"] = ",".join(_C.BUILT)        # the kernel modules this install holds
    info["cuda_available"] = cuda.is_available()
    return info
