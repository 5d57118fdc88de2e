"""Datasets from numpy arrays in memory and from ``.npz`` files."""
import math
import os
import zipfile
import zlib

import numpy as np

from ._common import ArrayDataset, DataFormatError
from ._files import _check_inflation, _scale


def from_arrays(x, y, layout="NCHW", dtype=np.float32, classes=None):
    """Arrays already in memory -> ArrayDataset, checked.

    x: (N, H, W) (one channel added), or 4-D in ``layout`` "NCHW" or "NHWC" (moved to NCHW). uint8 pixels are
    scaled to [0, 1] unless ``dtype=numpy.uint8``; float data is cast to ``dtype`` as is. y: N integer labels.
    """
    op = "from_arrays"
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise TypeError(f"{op}: x and y must be numpy arrays, got {type(x).__name__} and {type(y).__name__}")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"{op}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"{op}: x must be 3-D (N, H, W) or 4-D, got shape {tuple(x.shape)}")
    if x.dtype.kind not in "uif":
        raise TypeError(f"{op}: x must be numeric, got dtype {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{op}: y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{op}: y must hold integer labels, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise ValueError(f"{op}: y must be >= 0, got {y.min()}")
    if x.dtype == np.uint8:
        x = _scale(op, x, dtype)
    else:
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"{op}: dtype must be float32 or float64 for float data, got {np.dtype(dtype)}")
        x = np.ascontiguousarray(x, dtype=dtype)
    return ArrayDataset(x, y.astype(np.int64), classes)


def _npz_array(path, z, key):
    """Member ``key``.npy of the open zip z, read once its header's claimed size is checked against the
    member's size in the zip directory (and, when compressed, against 100 times its compressed size)."""
    info = z.getinfo(key + ".npy")
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise DataFormatError(path, f"member {info.filename}: .npy format version {version} is not supported")
        shape, fortran, dtype = read_header[version](f)
        if not dtype.hasobject:  # an object array is refused by read_array (allow_pickle=False), unread
            claim = f"member {info.filename}: header says shape {shape} {dtype}"
            want, have = math.prod(shape) * dtype.itemsize, info.file_size - f.tell()
            if want != have:
                raise DataFormatError(path, f"{claim} = {want} bytes of data, the member holds {have}")
            if info.compress_type != zipfile.ZIP_STORED:
                _check_inflation(path, claim, want, info.compress_size)
            elif info.compress_size > os.path.getsize(path):
                raise DataFormatError(path, f"member {info.filename}: {info.compress_size} bytes, more than the file")
    with z.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def load_npz(path, x_key="x", y_key="y", layout="NCHW", dtype=np.float32):
    """A ``.npz`` (as numpy.savez / savez_compressed write it) holding images and labels -> ArrayDataset.

    Object arrays are refused (``allow_pickle=False``). Keys default to "x" and "y". Each array's header
    is checked against its member's size in the archive before the array is read, and a compressed member
    may not inflate to more than 100 times its compressed size (above 16 MiB).
    """
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise DataFormatError(path, "not an .npz archive (a single .npy array)")
        with zipfile.ZipFile(path) as z:
            files = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
            missing = [k for k in (x_key, y_key) if k not in files]
            if missing:
                raise DataFormatError(path, f"missing array(s) {missing}; the file holds {files}")
            x, y = _npz_array(path, z, x_key), _npz_array(path, z, y_key)
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(path)}: no such file") from None
    except DataFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, KeyError) as e:
        raise DataFormatError(path, f"truncated or corrupt .npz ({type(e).__name__}: {e})") from None
    try:
        return from_arrays(x, y, layout=layout, dtype=dtype)
    except (ValueError, TypeError) as e:
        raise DataFormatError(path, str(e)) from None
