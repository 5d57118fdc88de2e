"""The array module of an array: numpy on the CPU, CuPy on a GPU. Glue that is not a hot path is written
once against `xp` so that one layer class serves both devices. Also the device names ("cpu", "cuda",
"cuda:N") that model.to, the trainer and the data loader take, and the one way arrays move between them."""
import numpy as np


def is_device_array(a):
    """True for a CuPy array; looks at the type's module only, so cupy is never imported here."""
    return type(a).__module__.startswith("cupy")


def require_cupy():
    """The cupy module: the one place cnnkit imports it. ImportError saying why and how to install it when it
    cannot be imported (missing, or CuPy failing to find its CUDA libraries)."""
    try:
        import cupy
    except Exception as e:
        raise ImportError(f"CuPy is not importable ({type(e).__name__}: {e}); install it with "
                          f"pip install 'cnnkit[cuda]'") from e
    return cupy


def array_module(*arrays):
    """cupy if any argument is a CuPy array, else numpy. CuPy is imported only when one is seen."""
    for a in arrays:
        if is_device_array(a):
            return require_cupy()
    return np


def device_of(a):
    """"cpu" for a numpy array, "cuda:N" for a CuPy array on GPU N."""
    return f"cuda:{a.device.id}" if is_device_array(a) else "cpu"


def parse_device(device, op, name="device", allow_none=False):
    """None for the CPU ("cpu", or None where allowed), the GPU index for "cuda" (CuPy's current device) or
    "cuda:N". TypeError/ValueError for anything else, RuntimeError (with cnnkit.cuda.status()'s reason) when
    CUDA cannot be used here."""
    expected = ("None, " if allow_none else "") + "'cpu', 'cuda' or 'cuda:N' (N a device index)"
    if (device is None and allow_none) or device == "cpu":
        return None
    if not isinstance(device, str):
        raise TypeError(f"{op}: {name} must be {expected}, got {type(device).__name__} {device!r}")
    head, _, tail = device.partition(":")
    if head != "cuda" or (tail and not tail.isdigit()) or device.endswith(":"):
        raise ValueError(f"{op}: {name} must be {expected}, got {device!r}")
    from . import cuda
    reason = cuda.status()
    if reason != "ok":
        raise RuntimeError(f"{op}: {name}={device!r} needs CUDA, which is not usable here: {reason}")
    cupy = require_cupy()
    if not tail:
        return cupy.cuda.Device().id
    index, count = int(tail), cuda.device_count()
    if index >= count:
        raise ValueError(f"{op}: {name} must name one of the {count} CUDA device(s) (cuda:0 to cuda:{count - 1}), "
                         f"got {device!r}")
    return index


def device_converter(device, op, name="device"):
    """A function taking an array to `device` (returning it unchanged when it is there already)."""
    index = parse_device(device, op, name)
    if index is None:
        return lambda a: a.get() if is_device_array(a) else a

    cupy = require_cupy()

    def to_gpu(a):
        if is_device_array(a) and a.device.id == index:
            return a
        if is_device_array(a):
            a = a.get()   # another GPU: through the host (rare; keeps the copy explicit)
        with cupy.cuda.Device(index):
            return cupy.asarray(a)
    return to_gpu
