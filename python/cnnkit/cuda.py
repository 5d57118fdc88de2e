"""CUDA availability. cnnkit imports on machines with no GPU, no driver or no CuPy; this module says which
of those holds. The CUDA kernels themselves arrive with the CUDA issue."""
from . import _C


def _cupy_error():
    try:
        import cupy  # noqa: F401
    except Exception as e:  # ImportError, or CuPy failing to find its CUDA libraries
        return f"CuPy is not importable ({type(e).__name__}: {e}); install it with pip install 'cnnkit[cuda]'"
    return None


def status():
    """A one-line reason: 'ok' when CUDA can be used, otherwise why not (no build, no device, no CuPy)."""
    if not _C.build_info()["cuda"]:
        return "cnnkit was built without CUDA (no nvcc at build time, or CNNKIT_CUDA=OFF)"
    count, why = _C.cuda_status()
    if count == 0:
        return why
    cupy_error = _cupy_error()
    return cupy_error if cupy_error else "ok"


def is_available():
    """True when cnnkit was built with CUDA, a device is present and CuPy imports."""
    return status() == "ok"


def device_count():
    """Number of CUDA devices the runtime sees (0 when built without CUDA or with no driver)."""
    if not _C.build_info()["cuda"]:
        return 0
    return _C.cuda_status()[0]
