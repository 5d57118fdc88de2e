"""CUDA availability. cnnkit imports on machines with no GPU, no driver or no CuPy; this module says which
of those holds, and never imports CuPy at module level. The GPU face of the ops is ``cnnkit._cuda_ops``,
reached through ``cnnkit.ops`` when the arguments are CuPy arrays."""
from . import _C

_ok = False  # set once status() has found CUDA usable; a usable device does not go away mid-process


def _cupy_error():
    try:
        import cupy  # noqa: F401
    except Exception as e:  # ImportError, or CuPy failing to find its CUDA libraries
        return f"CuPy is not importable ({type(e).__name__}: {e}); install it with pip install 'cnnkit[cuda]'"
    return None


def status():
    """A one-line reason: 'ok' when CUDA can be used, otherwise why not (no build, no device, no CuPy)."""
    global _ok
    if _ok:
        return "ok"
    if not _C.build_info()["cuda"]:
        return "cnnkit was built without CUDA (no nvcc at build time, or CNNKIT_CUDA=OFF)"
    if not hasattr(_C, "conv2d_fwd_cuda"):
        return "cnnkit._C has no CUDA kernels (stale build: reinstall cnnkit)"
    count, why = _C.cuda_status()
    if count == 0:
        return why
    cupy_error = _cupy_error()
    if cupy_error:
        return cupy_error
    _ok = True
    return "ok"


def is_available():
    """True when cnnkit was built with CUDA, a device is present and CuPy imports."""
    return status() == "ok"


def require(op):
    """Raise RuntimeError naming `op` and status()'s reason unless CUDA is usable."""
    reason = status()
    if reason != "ok":
        raise RuntimeError(f"{op}: got CuPy arrays but CUDA is not usable here: {reason}")


def device_count():
    """Number of CUDA devices the runtime sees (0 when built without CUDA or with no driver)."""
    if not _C.build_info()["cuda"]:
        return 0
    return _C.cuda_status()[0]
