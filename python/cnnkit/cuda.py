"""CUDA availability. cnnkit imports on machines with no GPU, no driver or no CuPy; this module says which
of those holds, and never imports CuPy at module level. The GPU face of the ops is ``cnnkit.ops._cuda``,
reached through ``cnnkit.ops`` when the arguments are CuPy arrays. ``set_tf32`` switches the float32
convolutions onto TF32 tensor cores (off by default)."""
import numpy as np

from . import _C
from ._xp import require_cupy

_ok = False  # set once status() has found CUDA usable; a usable device does not go away mid-process
_tf32 = False  # read by cnnkit.ops._cuda at each conv2d call


def _cupy_error():
    """None when CuPy imports, else require_cupy's message (why, and how to install it)."""
    try:
        require_cupy()
    except ImportError as e:
        return str(e)
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


def set_tf32(enabled):
    """Let the float32 GPU convolutions (forward, backward-data, backward-weight) multiply on tensor cores in
    TF32: each operand is rounded to 10 mantissa bits (round to nearest, ties away), products are summed in
    float32. Off by default. An output then differs from the exact result by up to about
    2**-10 * sum|a_i * b_i| over its terms (float32 alone: about n * 2**-24 * sum|a_i * b_i| for n terms,
    usually far less). float64 and the CPU never use TF32. Like torch.backends.cudnn.allow_tf32, but off
    by default, as PyTorch's matmul setting is. Process-wide; read at each call, so it may be changed any
    time."""
    global _tf32
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"set_tf32: enabled must be a bool, got {type(enabled).__name__}")
    _tf32 = bool(enabled)


def get_tf32():
    """True when the float32 GPU convolutions use TF32 tensor cores (see set_tf32); False by default."""
    return _tf32
