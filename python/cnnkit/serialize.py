"""model.save(path) / ck.load(path): one safetensors file holding the weights and buffers, with the
architecture as JSON in its header metadata, so the model is rebuilt from the file alone. Never pickle.

The write is atomic (DESIGN.md): a temp file in the same folder, fsync, os.replace, fsync of the folder,
so an interrupted save leaves the previous file intact. The metadata also records a SHA-256 of the
tensor bytes: a truncated or corrupted file raises ValueError and never loads silently.
"""
import hashlib
import json
import os
import struct
import tempfile

import numpy as np

from .graph import Layer, _layer_config, _layer_from_config

FORMAT = "cnnkit.model"
VERSION = 1


def _tensors(model):
    out = {}
    for n, p in model.named_parameters():
        out[n] = np.ascontiguousarray(p.data)
    for n, b in model.named_buffers():
        out[n] = np.ascontiguousarray(b)
    return out


def _digest(tensors):
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = tensors[k]
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def atomic_write(path, data):
    """Write bytes to path atomically: temp file in the same folder, fsync, os.replace, fsync the folder."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(model, path):
    """Save `model` (a Layer or a model) to `path` as safetensors + JSON architecture, atomically."""
    from safetensors.numpy import save as st_save
    if not isinstance(model, Layer):
        raise TypeError(f"save: expected a ck.Layer or model, got {type(model).__name__}")
    tensors = _tensors(model)
    arch = _layer_config(model.name or "model", model)
    meta = {"format": FORMAT, "version": str(VERSION), "architecture": json.dumps(arch),
            "rng": json.dumps({k: [str(s), str(o)] for k, (s, o) in model.rng_state().items()}),
            "training": json.dumps(model.training), "sha256": _digest(tensors)}
    atomic_write(path, st_save(tensors, metadata=meta))


def _corrupt(path, why):
    return ValueError(f"load: {path} is not a valid cnnkit model file ({why}); it may be truncated or corrupted")


def load(path):
    """Rebuild a model saved by save(): architecture, weights, buffers, frozen flags, random streams."""
    from safetensors.numpy import load as st_load
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise _corrupt(path, f"{len(data)} bytes, shorter than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise _corrupt(path, f"header claims {hlen} bytes but only {len(data) - 8} follow")
    try:
        header = json.loads(data[8:8 + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"header is not JSON: {e}") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise _corrupt(path, f"metadata format is {meta.get('format')!r}, expected {FORMAT!r}")
    if int(meta.get("version", -1)) > VERSION:
        raise ValueError(f"load: {path} has format version {meta['version']}, newer than this cnnkit ({VERSION})")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + hlen + end != len(data):
        raise _corrupt(path, f"tensor data should be {end} bytes, file holds {len(data) - 8 - hlen}")
    try:
        tensors = st_load(data)
    except Exception as e:   # safetensors raises its own error type
        raise _corrupt(path, f"safetensors: {e}") from None
    if _digest(tensors) != meta.get("sha256"):
        raise _corrupt(path, "checksum of the tensor data does not match")
    try:
        arch = json.loads(meta["architecture"])
        model = _layer_from_config(arch)
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"architecture: {e!r}") from None
    model.name = arch.get("name") if arch.get("name") != "model" else None
    want = dict(model.named_parameters())
    bufs = {}
    for path_, l in model.named_layers():
        for k in l._buffers:
            bufs[(path_ + "." if path_ else "") + k] = (l, k)
    missing = sorted((set(want) | set(bufs)) - set(tensors))
    extra = sorted(set(tensors) - set(want) - set(bufs))
    if missing or extra:
        raise ValueError(f"load: {path}: tensors do not match the architecture; missing {missing}, unexpected {extra}")
    for n, p in want.items():
        a = tensors[n]
        if a.shape != p.data.shape:
            raise ValueError(f"load: {path}: {n} has shape {a.shape}, the architecture expects {p.data.shape}")
        p.data = np.ascontiguousarray(a)
        p.grad = np.zeros_like(p.data)
    for n, (l, k) in bufs.items():
        a, want_shape = tensors[n], np.shape(l._buffers[k])
        if a.size != int(np.prod(want_shape)):
            raise ValueError(f"load: {path}: buffer {n} has shape {a.shape}, the architecture expects {want_shape}")
        l._buffers[k] = np.ascontiguousarray(a).reshape(want_shape)   # safetensors may store a 0-d array as (1,)
    rng = {k: (int(s), int(o)) for k, (s, o) in json.loads(meta.get("rng", "{}")).items()}
    model.set_rng_state(rng)
    model.train(json.loads(meta.get("training", "true")))
    return model


__all__ = ["save", "load", "atomic_write"]
