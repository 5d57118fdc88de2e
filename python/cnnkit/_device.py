"""Device names ("cpu", "cuda", "cuda:N"): parsing them, and moving arrays to the device they name."""
from . import cuda
from ._xp import is_device_array, require_cupy


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
