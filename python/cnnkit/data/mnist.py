"""IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed, and the MNIST-layout folders."""
import contextlib
import gzip
import math
import os
import pathlib
import zlib

import numpy as np

from ._common import ArrayDataset, DataFormatError
from ._files import _check_inflation, _scale

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]


_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_exact(f, n):
    """Up to n bytes from the stream f (fewer where it ends first) as a uint8 array, and whether more follow.
    Memory grows only as the bytes arrive."""
    out = np.empty(n, np.uint8)
    view, got = memoryview(out), 0
    while got < n:
        k = f.readinto(view[got:got + (1 << 20)])  # in pieces: one read of all would hold a second copy
        if not k:
            break
        got += k
    return out[:got], f.read(1) != b""


@contextlib.contextmanager
def _open_maybe_gzip(path):
    """The file at path as a binary stream (gunzipped when its first bytes say gzip), its size on disk and
    whether it is gzip. A truncated or corrupt gzip stream raises DataFormatError."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(path)}: no such file") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        gz = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        if not gz:
            yield f, size, False
            return
        try:
            with gzip.GzipFile(fileobj=f) as g:
                yield g, size, True
        except (EOFError, OSError, zlib.error) as e:
            raise DataFormatError(path, f"truncated or corrupt gzip stream ({type(e).__name__}: {e})") from None


def read_idx(path, expect_magic=None):
    """One IDX file (``.gz`` or not, detected by its bytes) -> numpy array in native byte order.

    Header: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, then each size as a big-endian uint32. The data must have
    exactly the size the header promises, checked before it is read: against the file's size, or for a
    ``.gz`` by reading exactly that much (a stream holding more or less is refused), and a ``.gz`` may not
    claim more than 100 times its own size (above 16 MiB). ``expect_magic`` (e.g. 2051 for MNIST images) is
    checked if given.
    """
    with _open_maybe_gzip(path) as (f, size, gz):
        head = f.read(4)
        if len(head) < 4:
            raise DataFormatError(path, f"truncated: {len(head)} bytes, shorter than the 4-byte IDX magic number")
        magic = int.from_bytes(head, "big")
        if expect_magic is not None and magic != expect_magic:
            raise DataFormatError(path, f"bad magic number 0x{magic:08X}, expected 0x{expect_magic:08X}")
        if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES or head[3] == 0:
            raise DataFormatError(path, f"bad magic number 0x{magic:08X}: not an IDX file")
        dtype, ndim = _IDX_TYPES[head[2]], head[3]
        dims = f.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise DataFormatError(path, f"truncated header: {ndim} dimensions need {4 + 4 * ndim} bytes, file has "
                                        f"{4 + len(dims)}")
        shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
        want = math.prod(shape) * dtype.itemsize
        claim = f"header says shape {shape}"
        if gz:
            _check_inflation(path, claim, want, size, "bytes of the compressed file")
        elif size - 4 - 4 * ndim != want:
            have = size - 4 - 4 * ndim
            raise DataFormatError(path, f"{'truncated' if have < want else 'trailing bytes'}: {claim} = {want} "
                                        f"bytes of data, file has {have}")
        data, more = _read_exact(f, want)
    if data.size < want:
        raise DataFormatError(path, f"truncated: {claim} = {want} bytes of data, file has {data.size}")
    if more:
        raise DataFormatError(path, f"trailing bytes: {claim} = {want} bytes of data, the gzip stream holds more")
    return data.view(dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _find_file(d, names):
    for n in names:
        for cand in (d / n, d / (n + ".gz")):
            if cand.exists():
                return cand
    raise FileNotFoundError(f"{os.fspath(d)}: none of {', '.join(n + '[.gz]' for n in names)}")


def load_mnist(root, dtype=np.float32, classes=None):
    """MNIST (or any IDX set with its file names) from a local folder -> ``{"train", "test"}``, x (N, 1, 28, 28).

    Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each optionally ``.gz``. Magic numbers (2051 images, 2049 labels), sizes,
    the image/label counts and the label range 0..9 are checked.
    """
    d = pathlib.Path(root)
    out = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        img_path = _find_file(d, [f"{stem}-images-idx3-ubyte", f"{stem}-images.idx3-ubyte"])
        lab_path = _find_file(d, [f"{stem}-labels-idx1-ubyte", f"{stem}-labels.idx1-ubyte"])
        x = read_idx(img_path, expect_magic=0x00000803)
        y = read_idx(lab_path, expect_magic=0x00000801)
        if y.shape[0] != x.shape[0]:
            raise DataFormatError(lab_path, f"{y.shape[0]} labels for {x.shape[0]} images in {img_path}")
        bad = np.flatnonzero(y > 9)
        if bad.size:
            raise DataFormatError(lab_path, f"mislabelled: entry {bad[0]} has label {y[bad[0]]}, expected 0..9")
        out[split] = ArrayDataset(_scale("load_mnist", x[:, None], dtype), y.astype(np.int64),
                                  classes or [str(i) for i in range(10)])
    return out


def load_fashion_mnist(root, dtype=np.float32):
    """Fashion-MNIST (Xiao et al. 2017): the MNIST IDX layout and file names, with clothing classes."""
    return load_mnist(root, dtype=dtype, classes=FASHION_MNIST_CLASSES)
