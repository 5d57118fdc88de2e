"""CIFAR "python" batches: pickles read through a restricted unpickler that builds only dicts, lists,
strings, numbers and numeric arrays, and refuses every other global."""
import io
import math
import pickle

import numpy as np

from ._common import DataFormatError
from ._files import _read_bytes


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
