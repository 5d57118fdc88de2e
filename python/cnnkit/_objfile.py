"""ck.save / ck.load of plain data: nested dicts, lists and tuples of arrays, ints, floats, bools, None and strings
(the state dicts of models, optimizers and schedules, a loop's own counters) in one safetensors file. Never pickle.

The arrays are the file's tensors ("0", "1", ... in the order met); the structure is a JSON skeleton in the
header metadata, where every container and array is a one-key object ({"dict": {...}}, {"list": [...]},
{"tuple": [...]}, {"array": "0"}, {"scalar": "1"} for a numpy scalar), so what comes back is what went in.
Also the checked safetensors header reader the model format (cnnkit.serialize) shares: every size the header
claims is checked against the file before anything is allocated.
"""
import hashlib
import json
import math
import numbers
import struct

import numpy as np

from ._io import atomic_write
from ._xp import is_device_array

FORMAT = "cnnkit.object"
VERSION = 1
MAX_DEPTH = 64          # containers inside containers a file may hold (a state dict is a few levels deep)
_TAGS = ("dict", "list", "tuple", "array", "scalar", "float")

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "U16": 2, "U32": 4, "U64": 8}
_SAVABLE = {np.dtype(t) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                                  np.uint64, np.uint32, np.uint16, np.uint8, np.bool_)}


def digest(tensors):
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = tensors[k]
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# ---------------------------------------------------------------- the checked reader (both formats)
def read_header(path, data, corrupt):
    """(header length, header object, metadata) of a safetensors file's bytes; every problem is
    ``corrupt(path, why)``, raised."""
    if len(data) < 8:
        raise corrupt(path, f"{len(data)} bytes, shorter than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise corrupt(path, f"header claims {hlen} bytes but only {len(data) - 8} follow")
    try:
        header = json.loads(data[8:8 + hlen])
    except (ValueError, RecursionError) as e:   # JSONDecodeError, bad UTF-8, an int of too many digits
        raise corrupt(path, f"header is not JSON: {str(e)[:200]}") from None
    if not isinstance(header, dict):
        raise corrupt(path, f"header must be a JSON object, got {type(header).__name__}")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise corrupt(path, "header field '__metadata__' must be an object of strings")
    return hlen, header, meta


def check_version(path, meta, newest, corrupt, error):
    version = meta.get("version", "")
    if not (version.isascii() and version.isdigit() and len(version) < 10):
        raise corrupt(path, f"metadata field 'version' must be a decimal integer, got {version[:50]!r}")
    if int(version) > newest:
        raise error(f"load: {path} has format version {version}, newer than this cnnkit ({newest})")


def check_entries(path, data, hlen, header, corrupt):
    """{name: (dtype, shape)} of the header's tensors: each a known dtype whose shape fills exactly its
    data_offsets, and together exactly the bytes after the header."""
    entries, end = {}, 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        if not isinstance(v, dict):
            raise corrupt(path, f"header entry {k[:100]!r} must be an object")
        off, shape, dtype = v.get("data_offsets"), v.get("shape"), v.get("dtype")
        if not (isinstance(off, list) and len(off) == 2 and all(_count(x) for x in off) and off[0] <= off[1]):
            raise corrupt(path, f"header entry {k[:100]!r}: data_offsets must be [begin, end], got {str(off)[:100]}")
        if not (isinstance(shape, list) and all(_count(x) for x in shape)) or dtype not in _ITEMSIZE:
            raise corrupt(path, f"header entry {k[:100]!r}: shape {str(shape)[:100]} / dtype {str(dtype)[:20]} "
                                f"is not a safetensors tensor")
        if math.prod(shape) * _ITEMSIZE[dtype] != off[1] - off[0]:
            raise corrupt(path, f"header entry {k[:100]!r}: shape {shape} of {dtype} does not fill data_offsets "
                                f"{off}")
        entries[k] = (dtype, tuple(shape))
        end = max(end, off[1])
    if 8 + hlen + end != len(data):
        raise corrupt(path, f"tensor data should be {end} bytes, file holds {len(data) - 8 - hlen}")
    return entries


def load_tensors(path, data, meta, corrupt):
    """The tensors of checked bytes, their checksum compared with the metadata's."""
    from safetensors.numpy import load as st_load
    try:
        tensors = st_load(data)
    except Exception as e:   # safetensors raises its own error type
        raise corrupt(path, f"safetensors: {e}") from None
    if digest(tensors) != meta.get("sha256"):
        raise corrupt(path, "checksum of the tensor data does not match")
    return tensors


# ---------------------------------------------------------------- the object format
class ObjectFileError(ValueError):
    """A ck.save data file that ck.load cannot read back: truncated, corrupted, tampered or malformed."""


def _corrupt(path, why):
    return ObjectFileError(f"load: {path} is not a valid cnnkit object file ({why}); it may be truncated or "
                           f"corrupted")


def _where(path):
    return "obj" + "".join(f"[{k!r}]" for k in path)


def _encode(obj, tensors):
    """The JSON skeleton of obj, its arrays moved into `tensors`; iterative, with a depth limit and a check
    for containers that hold themselves."""
    root = [None]
    stack = [(obj, root, 0, (), frozenset())]
    while stack:
        v, slot, key, path, inside = stack.pop()
        if len(path) > MAX_DEPTH:
            raise ValueError(f"save: {_where(path)}: containers nested more than {MAX_DEPTH} deep")
        if isinstance(v, (np.ndarray, np.generic)) or is_device_array(v):   # first: np.float64 is a float
            a = v.get() if is_device_array(v) else np.asarray(v)
            if a.dtype not in _SAVABLE:
                raise TypeError(f"save: {_where(path)}: arrays must have a numeric or bool dtype, got {a.dtype}")
            # C order, little-endian (safetensors' layout); not ascontiguousarray, which makes a 0-d array 1-d
            a = a.astype(a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype, order="C", copy=False)
            name = str(len(tensors))
            tensors[name] = a
            slot[key] = {"scalar" if isinstance(v, np.generic) else "array": name}
        elif v is None or isinstance(v, (bool, str)):
            slot[key] = v
        elif isinstance(v, numbers.Integral):
            slot[key] = int(v)
        elif isinstance(v, float):
            slot[key] = v if math.isfinite(v) else {"float": repr(v)}   # JSON has no inf / nan
        elif isinstance(v, (dict, list, tuple)):
            if id(v) in inside:
                raise ValueError(f"save: {_where(path)} contains itself")
            inside = inside | {id(v)}
            if isinstance(v, dict):
                bad = next((k for k in v if not isinstance(k, str)), None)
                if bad is not None:
                    raise TypeError(f"save: {_where(path)}: dict keys must be str (JSON object keys), got "
                                    f"{type(bad).__name__} key {bad!r}")
                body = {}
                items = list(v.items())
            else:
                body = [None] * len(v)
                items = list(enumerate(v))
            slot[key] = {"dict" if isinstance(v, dict) else type(v).__name__: body}
            for k, item in reversed(items):     # reversed: the tensors are numbered in the order met
                stack.append((item, body, k, path + (k,), inside))
        else:
            raise TypeError(f"save: {_where(path)}: cannot save a {type(v).__name__}; ck.save takes dicts (str "
                            f"keys), lists, tuples, numpy / CuPy arrays, ints, floats, bools, None and str")
    return root[0]


def _decode(path, skeleton, shapes, tensors=None):
    """The object a skeleton describes, each tensor (of `shapes`, the header's) used once; any malformed node
    is an ObjectFileError. Without `tensors` only the checks run (before the tensors are read)."""
    used, tuples = set(), []
    root = [None]
    stack = [(skeleton, root, 0, 0)]
    while stack:
        node, slot, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _corrupt(path, f"skeleton: containers nested more than {MAX_DEPTH} deep")
        if node is None or isinstance(node, (bool, int, float, str)):
            slot[key] = node
            continue
        if not (isinstance(node, dict) and len(node) == 1 and next(iter(node)) in _TAGS):
            raise _corrupt(path, f"skeleton: a value must be null, a bool, a number, a string or a one-key object "
                                 f"tagged {list(_TAGS)}, got {str(node)[:100]}")
        (tag, body), = node.items()
        if tag in ("array", "scalar"):
            if not isinstance(body, str) or body not in shapes or body in used:
                raise _corrupt(path, f"skeleton: {tag} names tensor {str(body)[:50]!r}, which the file does not "
                                     f"hold or which is used twice")
            used.add(body)
            if tag == "scalar" and shapes[body] != ():
                raise _corrupt(path, f"skeleton: scalar tensor {body!r} has shape {shapes[body]}, expected ()")
            a = None if tensors is None else tensors[body]
            slot[key] = a[()] if tag == "scalar" and a is not None else a
        elif tag == "float":
            if body not in ("inf", "-inf", "nan"):
                raise _corrupt(path, f"skeleton: float must be 'inf', '-inf' or 'nan', got {str(body)[:50]!r}")
            slot[key] = float(body)
        elif tag == "dict":
            if not isinstance(body, dict):
                raise _corrupt(path, f"skeleton: dict must hold an object, got {type(body).__name__}")
            out = slot[key] = {}
            for k, v in body.items():
                out[k] = None
                stack.append((v, out, k, depth + 1))
        else:
            if not isinstance(body, list):
                raise _corrupt(path, f"skeleton: {tag} must hold an array, got {type(body).__name__}")
            out = [None] * len(body)
            slot[key] = out
            for i, v in enumerate(body):
                stack.append((v, out, i, depth + 1))
            if tag == "tuple":
                tuples.append((slot, key))
    for slot, key in reversed(tuples):    # inner tuples were made later: frozen first, then their holders
        slot[key] = tuple(slot[key])
    return root[0], used


def save_object(obj, path):
    """Write `obj` (nested dicts with str keys, lists, tuples, numpy or CuPy arrays, numpy scalars, ints,
    floats, bools, None, str) to `path` as one safetensors file, atomically."""
    from safetensors.numpy import save as st_save
    tensors = {}
    skeleton = _encode(obj, tensors)
    meta = {"format": FORMAT, "version": str(VERSION), "skeleton": json.dumps(skeleton, allow_nan=False),
            "sha256": digest(tensors)}
    atomic_write(path, st_save(tensors, metadata=meta))


def load_object(path, data, hlen, header, meta):
    """The object in a ck.save file's bytes (header already parsed by read_header)."""
    check_version(path, meta, VERSION, _corrupt, ObjectFileError)
    shapes = {k: shape for k, (_, shape) in check_entries(path, data, hlen, header, _corrupt).items()}
    try:
        skeleton = json.loads(meta.get("skeleton", ""))
    except (ValueError, RecursionError) as e:
        raise _corrupt(path, f"skeleton metadata is not JSON (or nests too deep): {str(e)[:200]}") from None
    _, used = _decode(path, skeleton, shapes)          # the whole structure checked before any tensor is read
    if used != set(shapes):
        raise _corrupt(path, f"tensors {sorted(set(shapes) - used)[:10]} are not in the skeleton")
    return _decode(path, skeleton, shapes, load_tensors(path, data, meta, _corrupt))[0]


__all__ = ["save_object", "load_object", "ObjectFileError", "digest", "read_header", "check_entries",
           "load_tensors", "FORMAT"]
