"""Helpers the dataset readers share: pixel scaling, reading a whole file, and the decompression-bomb
check for compressed formats."""
import os

import numpy as np

from ._common import DataFormatError


def _scale(op, x, dtype, maxval=255.0):
    """uint8 pixels -> dtype: uint8 stays raw; float32/float64 are divided by maxval (into [0, 1])."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return np.ascontiguousarray(x)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: dtype must be numpy.float32, numpy.float64 or numpy.uint8, got {dtype}")
    return np.ascontiguousarray(np.divide(x, maxval, dtype=dtype))


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(path)}: no such file") from None


# A compressed file may inflate to at most this many times its size (real image data deflates 2 to 5 fold, a
# decompression bomb about 1,000 fold); up to _INFLATE_ANYWAY bytes are accepted whatever the ratio.
_MAX_INFLATION = 100
_INFLATE_ANYWAY = 16 << 20


def _check_inflation(path, what, claimed, compressed, of="compressed bytes"):
    if claimed > max(_INFLATE_ANYWAY, _MAX_INFLATION * compressed):
        raise DataFormatError(path, f"{what} = {claimed} bytes of data, more than {_MAX_INFLATION} times the "
                                    f"{compressed} {of} (refused as a decompression bomb)")
