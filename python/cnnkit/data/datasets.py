"""Datasets: the bundled UCI digits, and readers for the formats users keep on disk.

Every reader takes a local path and never fetches anything. A whole file is read and checked before any
array is returned, so a truncated, corrupt or mislabelled file raises ``DataFormatError`` (a ValueError)
naming the file and what was wrong, and nothing is half-loaded. Images come back NCHW; by default as
float32 scaled to [0, 1] (``dtype=numpy.uint8`` keeps the raw bytes), labels as int64.
Formats: CIFAR-10/100 binary (https://www.cs.toronto.edu/~kriz/cifar.html), CIFAR-10 "python" pickles
(through a restricted unpickler), MNIST / Fashion-MNIST IDX (http://yann.lecun.com/exdb/mnist/), image
folders (Pillow), numpy arrays and ``.npz``.
"""
import contextlib
import gzip
import io
import math
import os
import pathlib
import pickle
import zipfile
import zlib

import numpy as np

from ._common import ArrayDataset, DataFormatError

__all__ = ["load_digits", "load_cifar10", "load_cifar100", "read_cifar_binary", "read_cifar_pickle",
           "load_mnist", "load_fashion_mnist", "read_idx", "load_image_folder", "load_npz", "from_arrays"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
DIGITS_FILE = pathlib.Path(__file__).resolve().parent / "digits.npz"


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


# ---------------------------------------------------------------- bundled digits

def load_digits(dtype=np.float32):
    """The UCI handwritten digits bundled with cnnkit: 1,797 grey 8x8 images of the digits 0-9.

    Source: Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning Repository,
    CC BY 4.0 (the copy scikit-learn ships as ``load_digits``; see DIGITS_LICENSE.txt). Pixel values 0..16
    are scaled to [0, 1] (divided by 16) unless ``dtype=numpy.uint8``.

    Returns ``{"train", "val", "test"}`` -> ArrayDataset with x (N, 1, 8, 8) and y (N,) int64. The split is
    fixed and stored in the file: 1,197 / 300 / 300 images, chosen by a permutation of numpy's PCG64 seeded
    with 0 (tools/make_digits.py); within each split the images keep the original order.
    """
    with np.load(DIGITS_FILE, allow_pickle=False) as f:
        images, labels, split = f["images"], f["labels"], f["split"]
    if images.shape != (1797, 8, 8) or labels.shape != (1797,) or split.shape != (1797,):
        raise DataFormatError(DIGITS_FILE, "unexpected array shapes (reinstall cnnkit)")
    x = images.reshape(-1, 1, 8, 8)
    out = {}
    for code, name in enumerate(("train", "val", "test")):
        sel = split == code
        out[name] = ArrayDataset(_scale("load_digits", x[sel], dtype, 16.0), labels[sel].astype(np.int64),
                                 classes=[str(d) for d in range(10)])
    return out


# ---------------------------------------------------------------- CIFAR binary

def read_cifar_binary(path, label_bytes=1, num_classes=(10,)):
    """One CIFAR binary batch file -> (images uint8 (N, 3, 32, 32), labels int64 (N, label_bytes)).

    A record is ``label_bytes`` label bytes (CIFAR-10: 1; CIFAR-100: 2, coarse then fine) followed by 3,072
    pixel bytes (1,024 red, 1,024 green, 1,024 blue, row-major). ``num_classes`` bounds each label byte.
    """
    data = _read_bytes(path)
    rec = label_bytes + 3072
    if len(data) == 0:
        raise DataFormatError(path, "file is empty")
    if len(data) % rec:
        raise DataFormatError(path, f"truncated or corrupt: size {len(data)} bytes is not a multiple of the "
                                    f"record size {rec} ({label_bytes} label byte(s) + 3072 pixel bytes)")
    raw = np.frombuffer(data, np.uint8).reshape(-1, rec)
    labels = raw[:, :label_bytes].astype(np.int64)
    for k, nc in enumerate(num_classes):
        bad = np.flatnonzero(labels[:, k] >= nc)
        if bad.size:
            raise DataFormatError(path, f"mislabelled: record {bad[0]} has label {labels[bad[0], k]}, "
                                        f"expected 0..{nc - 1}")
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), labels


def _find_dir(root, names, marker):
    root = pathlib.Path(root)
    for cand in [root] + [root / n for n in names]:
        if (cand / marker).exists():
            return cand
    raise FileNotFoundError(f"{os.fspath(root)}: no {marker} here or in {', '.join(names)}")


def _read_lines(path):
    try:
        return [s for s in path.read_text().split("\n") if s.strip()]
    except FileNotFoundError:
        return None


def load_cifar10(root, format="auto", dtype=np.float32):
    """CIFAR-10 from a local folder (never downloads) -> ``{"train", "test"}`` of ArrayDataset (N, 3, 32, 32).

    ``root`` is the folder holding the batches (``cifar-10-batches-bin`` or ``cifar-10-batches-py``) or
    its parent. ``format``: "binary" (``data_batch_1.bin`` .. ``_5.bin``, ``test_batch.bin``), "python"
    (``data_batch_1`` .. ``_5``, ``test_batch``, read by :func:`read_cifar_pickle`; pickle from an
    untrusted source is unsafe, see there) or "auto" (binary when present).
    """
    op = "load_cifar10"
    if format not in ("auto", "binary", "python"):
        raise ValueError(f"{op}: format must be 'auto', 'binary' or 'python', got {format!r}")
    if format == "auto":
        try:
            _find_dir(root, ["cifar-10-batches-bin"], "data_batch_1.bin")
            format = "binary"
        except FileNotFoundError:
            format = "python"
    if format == "binary":
        d = _find_dir(root, ["cifar-10-batches-bin"], "data_batch_1.bin")
        parts = {"train": [d / f"data_batch_{i}.bin" for i in range(1, 6)], "test": [d / "test_batch.bin"]}
        read = lambda p: read_cifar_binary(p)  # noqa: E731
        classes = _read_lines(d / "batches.meta.txt") or CIFAR10_CLASSES
    else:
        d = _find_dir(root, ["cifar-10-batches-py"], "data_batch_1")
        parts = {"train": [d / f"data_batch_{i}" for i in range(1, 6)], "test": [d / "test_batch"]}
        read = _cifar_pickle_batch
        classes = CIFAR10_CLASSES
        if (d / "batches.meta").exists():
            meta = read_cifar_pickle(d / "batches.meta")
            names = meta.get("label_names")
            if not (isinstance(names, list) and len(names) == 10 and all(isinstance(s, str) for s in names)):
                raise DataFormatError(d / "batches.meta", "label_names must be a list of 10 names")
            classes = names
    out = {}
    for split, files in parts.items():
        xs, ys = zip(*(read(p) for p in files))
        out[split] = ArrayDataset(_scale(op, np.concatenate(xs), dtype), np.concatenate(ys)[:, 0], classes)
    return out


def load_cifar100(root, label_mode="fine", dtype=np.float32):
    """CIFAR-100 binary (``train.bin``, ``test.bin`` in ``cifar-100-binary`` or ``root``) -> ``{"train", "test"}``.

    ``label_mode``: "fine" (100 classes) or "coarse" (20 superclasses).
    """
    op = "load_cifar100"
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"{op}: label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    d = _find_dir(root, ["cifar-100-binary"], "train.bin")
    col = 1 if label_mode == "fine" else 0
    classes = _read_lines(d / f"{label_mode}_label_names.txt")
    out = {}
    for split in ("train", "test"):
        x, y = read_cifar_binary(d / f"{split}.bin", label_bytes=2, num_classes=(20, 100))
        out[split] = ArrayDataset(_scale(op, x, dtype), y[:, col], classes)
    return out


# ---------------------------------------------------------------- CIFAR python (restricted pickle)

class _Refused(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list, or asked for a dtype or array outside the numeric ones."""


# The dtypes a numeric array may have, by the name numpy pickles them under. The dtype is taken from this
# table, never built from the file: numpy's dtype.__setstate__ trusts its state, and a forged one (fields
# holding object pointers) makes numpy read raw file bytes as PyObject* and crash.
_PICKLE_DTYPES = {np.dtype(c).str[1:]: np.dtype(c) for c in "?bBhHiIlLqQefd"}
_BYTE_ORDERS = {"|": "=", "=": "=", "<": "<", ">": ">"}


def _text(v):
    return v.decode("latin1") if isinstance(v, bytes) else v


class _PickledDtype:
    """What ``numpy.dtype(name, align, copy)`` yields inside a dataset pickle: a name from _PICKLE_DTYPES and
    the byte order its BUILD state gives. A state with anything more (sub-arrays, fields, sizes) is refused."""

    def __init__(self, name, align=False, copy=True):
        name = _text(name)
        if not isinstance(name, str) or name not in _PICKLE_DTYPES:
            raise _Refused(f"refused dtype {name!r}: only numeric arrays ({', '.join(_PICKLE_DTYPES)}) may appear "
                           f"in a dataset pickle")
        self.dtype = _PICKLE_DTYPES[name]

    def __repr__(self):
        return repr(self.dtype)

    def __setstate__(self, state):
        # numpy writes (3, byte order, None, None, None, -1, -1, 0) for a plain dtype, and version 4 adds metadata
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                and _text(state[1]) in _BYTE_ORDERS and state[2:5] == (None, None, None) and state[5:8] == (-1, -1, 0)
                and state[8:] in ((), (None,))):
            raise _Refused(f"refused dtype state {state!r}: only the state of a plain numeric dtype is allowed")
        self.dtype = self.dtype.newbyteorder(_BYTE_ORDERS[_text(state[1])])


class _PickledArray:
    """What numpy's ``_reconstruct(ndarray, ...)`` yields inside a dataset pickle. Its BUILD state (version,
    shape, dtype, Fortran order, raw bytes) is checked here; the array itself is made by _Walk, which counts
    its bytes."""

    def __init__(self, subtype, shape=None, typecode=None):
        if subtype is not _NDARRAY:
            raise _Refused(f"refused _reconstruct of {subtype!r}: only numpy.ndarray")
        self.state = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise _Refused(f"refused array state of type {type(state).__name__}: expected (1, shape, dtype, "
                           f"fortran, raw bytes)")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _PickledDtype):
            raise _Refused(f"refused array dtype of type {type(dtype).__name__}: expected a numpy.dtype")
        if not (isinstance(shape, tuple) and len(shape) <= 32
                and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2 ** 62 for n in shape)):
            raise ValueError(f"array shape must be a tuple of at most 32 sizes, got {shape!r}")
        if not isinstance(raw, bytes):
            raise _Refused(f"refused array data of type {type(raw).__name__}: only raw bytes of a numeric array")
        if fortran not in (False, True):
            raise ValueError(f"array Fortran flag must be a bool, got {fortran!r}")
        need = math.prod(shape) * dtype.dtype.itemsize
        if len(raw) != need:
            raise ValueError(f"array of shape {shape} and dtype {dtype.dtype} needs {need} bytes, got {len(raw)}")
        self.state = (shape, dtype.dtype, bool(fortran), raw)


_NDARRAY = object()  # numpy.ndarray, only ever passed to _reconstruct


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only the globals a pickled numpy array needs, and lets none of them reach numpy.

    Dicts, lists, str, bytes and ints are built by pickle opcodes without looking up any global. A numpy
    array names ``numpy.core.multiarray._reconstruct`` (``numpy._core.multiarray`` since numpy 2),
    ``numpy.ndarray`` and ``numpy.dtype``; these resolve to _PickledArray, a marker and _PickledDtype, which
    check every argument and state. Nothing else can be named, so a payload that would call ``os.system`` or
    ``eval`` fails at its first global, before anything runs.
    """

    _RECONSTRUCT = ("_reconstruct", frozenset({"numpy.core.multiarray", "numpy._core.multiarray"}))

    def find_class(self, module, name):
        if name == self._RECONSTRUCT[0] and module in self._RECONSTRUCT[1]:
            return _PickledArray
        if module == "numpy" and name == "ndarray":
            return _NDARRAY
        if module == "numpy" and name == "dtype":
            return _PickledDtype
        raise _Refused(f"refused global {module}.{name}: only numpy arrays, dicts, lists, "
                                     f"str, bytes and ints may appear in a dataset pickle")


_MAX_DEPTH = 16  # a CIFAR batch is a dict of lists: depth 2
_MAX_ITEMS = 1 << 24  # dict and list entries in all; CIFAR-100's training batch has about 150,000


class _Walk:
    """The unpickled objects -> plain values (bytes keys and list entries decoded as latin-1, arrays built),
    visiting each container once: a container reached twice (shared, or holding itself) is refused, as are
    more than _MAX_DEPTH levels, more than _MAX_ITEMS entries, and arrays holding more bytes than the file."""

    def __init__(self, path, nbytes):
        self.path, self.nbytes, self.items, self.array_bytes, self.seen = path, nbytes, 0, 0, set()

    def refuse(self, what):
        raise DataFormatError(self.path, f"unsafe pickle: {what}")

    def __call__(self, obj, where="top level", depth=0):
        if isinstance(obj, (dict, list)):
            if id(obj) in self.seen:
                self.refuse(f"the {type(obj).__name__} at {where} is also reached from elsewhere (shared or cyclic "
                            f"containers are refused)")
            self.seen.add(id(obj))
            if depth >= _MAX_DEPTH:
                self.refuse(f"nested deeper than {_MAX_DEPTH} levels at {where}")
            self.items += len(obj)
            if self.items > _MAX_ITEMS:
                self.refuse(f"more than {_MAX_ITEMS} list and dict entries")
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if not isinstance(k, (str, bytes)):
                    raise DataFormatError(self.path, f"dict key of type {type(k).__name__} at {where}")
                out[_text(k)] = self(v, f"{where}[{k!r}]", depth + 1)
            return out
        if isinstance(obj, list):
            return [_text(v) if isinstance(v, bytes) else self(v, f"{where}[{i}]", depth + 1)
                    for i, v in enumerate(obj)]
        if isinstance(obj, _PickledArray):
            if obj.state is None:
                raise DataFormatError(self.path, f"array without data at {where}")
            shape, dtype, fortran, raw = obj.state
            self.array_bytes += len(raw)
            if self.array_bytes > self.nbytes:
                self.refuse(f"the arrays up to {where} hold {self.array_bytes} bytes, more than the file's "
                            f"{self.nbytes} (arrays sharing their data are refused)")
            x = np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")
            return x.astype(dtype.newbyteorder("="), order="K")
        if isinstance(obj, bool) or not isinstance(obj, (str, bytes, int)):
            raise DataFormatError(self.path, f"value of type {type(obj).__name__} at {where} (allowed: dict, list, "
                                             f"str, bytes, int, numpy array)")
        return obj


def read_cifar_pickle(path):
    """Load one CIFAR "python"-format pickle through a restricted unpickler -> dict (str keys).

    WARNING: unpickling data from an untrusted source is unsafe in general: a pickle is a program, and
    ``pickle.load`` runs whatever it names. This reader admits only dicts, lists, str, bytes, ints and
    numeric numpy arrays, and raises ``DataFormatError`` on anything else, before the payload can run. The
    only globals it resolves are ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
    ``numpy.dtype``, and none of them reaches numpy: the dtype must be a plain numeric one (bool, int,
    uint, float), looked up by name, whose pickled state may only give a byte order; an array must be raw
    bytes of exactly its shape times its item size, and is built by this reader (native byte order,
    writable). The walk over the result visits each dict and list once: a shared or cyclic container,
    nesting deeper than 16 levels, more than 2**24 entries or arrays holding more bytes than the file are
    refused. That narrows the attack surface; it does not make arbitrary pickles safe to open. Prefer the
    binary format.
    Python 2 pickles (the original CIFAR files) are read with ``encoding="bytes"``; byte-string keys and
    list entries are decoded as latin-1. Python 3 pickles of protocol 3 or 4 also work; protocol 2 written by
    Python 3 (bytes through ``_codecs.encode``) and protocol 5 (``numpy._core.numeric._frombuffer``) name
    globals outside the allow-list and are refused: re-save them with protocol 4.
    """
    data = _read_bytes(path)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as e:
        raise DataFormatError(path, f"unsafe pickle: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OverflowError, UnicodeDecodeError) as e:
        raise DataFormatError(path, f"truncated or corrupt pickle ({type(e).__name__}: {e})") from None
    return _Walk(path, len(data))(obj)


def _cifar_pickle_batch(path):
    d = read_cifar_pickle(path)
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        raise DataFormatError(path, "not a CIFAR-10 batch: expected a dict with 'data' and 'labels'")
    x, labels = d["data"], d["labels"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataFormatError(path, f"'data' must be a uint8 array (N, 3072), got "
                                    f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu" or y.shape[0] != x.shape[0]:
        raise DataFormatError(path, f"'labels' must be {x.shape[0]} integers, got {y.shape[0] if y.ndim else 0}")
    bad = np.flatnonzero((y < 0) | (y > 9))
    if bad.size:
        raise DataFormatError(path, f"mislabelled: entry {bad[0]} has label {y[bad[0]]}, expected 0..9")
    return x.reshape(-1, 3, 32, 32).copy(), y.astype(np.int64)[:, None]


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


# A compressed file may inflate to at most this many times its size (real image data deflates 2 to 5 fold, a
# decompression bomb about 1,000 fold); up to _INFLATE_ANYWAY bytes are accepted whatever the ratio.
_MAX_INFLATION = 100
_INFLATE_ANYWAY = 16 << 20


def _check_inflation(path, what, claimed, compressed, of="compressed bytes"):
    if claimed > max(_INFLATE_ANYWAY, _MAX_INFLATION * compressed):
        raise DataFormatError(path, f"{what} = {claimed} bytes of data, more than {_MAX_INFLATION} times the "
                                    f"{compressed} {of} (refused as a decompression bomb)")


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


# ---------------------------------------------------------------- image folders (Pillow)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def load_image_folder(root, size=None, mode="RGB", dtype=np.float32, extensions=IMAGE_EXTENSIONS):
    """Images under ``root/<class>/*`` (one sub-folder per class, sorted by name) -> ArrayDataset.

    Needs Pillow, an optional dependency (``pip install cnnkit[images]``). ``mode`` is a Pillow mode ("RGB"
    or "L"); ``size`` (h, w) resizes every image bilinearly; without it all images must share one size.
    """
    op = "load_image_folder"
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError(f"{op} needs Pillow, an optional dependency: pip install 'cnnkit[images]' "
                          f"(or pip install pillow)") from None
    if mode not in ("RGB", "L"):
        raise ValueError(f"{op}: mode must be 'RGB' or 'L', got {mode!r}")
    if size is not None:
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
            raise ValueError(f"{op}: size must be a pair (h, w) of positive ints, got {size!r}")
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{os.fspath(root)}: not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataFormatError(root, "no class sub-folders")
    images, labels, shape0, first = [], [], None, None
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.is_file() and p.suffix.lower() in extensions)
        for p in files:
            try:
                with Image.open(p) as im:
                    im.load()
                    im = im.convert(mode)
                    if size is not None:
                        im = im.resize((size[1], size[0]), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
                raise DataFormatError(p, f"unreadable or corrupt image ({type(e).__name__}: {e})") from None
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            if shape0 is None:
                shape0, first = a.shape, p
            elif a.shape != shape0:
                raise DataFormatError(p, f"image is {a.shape[1]}x{a.shape[2]} but {first} is "
                                         f"{shape0[1]}x{shape0[2]}; pass size=(h, w) to resize")
            images.append(a)
            labels.append(label)
    if not images:
        raise DataFormatError(root, f"no images with extensions {', '.join(extensions)}")
    return ArrayDataset(_scale(op, np.stack(images), dtype), np.asarray(labels, np.int64), classes)


# ---------------------------------------------------------------- numpy arrays and .npz

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
