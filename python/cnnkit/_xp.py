"""The array module of an array: numpy on the CPU, CuPy on a GPU. Glue that is not a hot path is written
once against `xp` so that one layer class serves both devices."""
import numpy as np


def array_module(*arrays):
    """cupy if any argument is a CuPy array, else numpy. CuPy is imported only when one is seen."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy
            return cupy
    return np
