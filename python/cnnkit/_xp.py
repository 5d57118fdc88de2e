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
