"""model.save(path) / ck.load(path): one safetensors file holding the weights and buffers, with the
architecture as JSON in its header metadata, so the model is rebuilt from the file alone. Never pickle.

The write is atomic: a temp file in the same folder, fsync, os.replace, fsync of the folder,
so an interrupted save leaves the previous file intact. The metadata also records a SHA-256 of the
tensor bytes: a truncated, corrupted or tampered file raises ModelFileError (a ValueError) and never loads
silently, and nothing is built before the file's header and architecture have been checked.
"""
import json
import os

import numpy as np

from . import _objfile
from ._io import atomic_write
from ._objfile import check_entries, check_version, load_tensors, read_header
from ._objfile import digest as _digest
from ._registry import _BASES, _REGISTRY, _layer_config, _layer_from_config
from ._xp import is_device_array

FORMAT = "cnnkit.model"
VERSION = 1


def _tensors(model):
    """name -> a host copy of every parameter and buffer (a model on a GPU is read back)."""
    out = {}
    for n, a in [(n, p.data) for n, p in model.named_parameters()] + list(model.named_buffers()):
        out[n] = np.ascontiguousarray(a.get() if is_device_array(a) else a)
    return out


class ModelFileError(ValueError):
    """A model file that is not one ck.load can rebuild: truncated, corrupted, tampered or not ours."""


_CONTAINERS = ("Sequential", "Graph")
MAX_DEPTH = 64   # nesting of models inside models a file may describe (deeper is no real network)


def _custom_model_class(model_or_cls):
    """The name of the ck.Sequential / ck.Graph a user's subclass extends, when it rebuilds through the
    base's from_config (its own __init__ would not take the base's arguments); else None."""
    cls = model_or_cls if isinstance(model_or_cls, type) else type(model_or_cls)
    for base in (_BASES["Sequential"], _BASES["Graph"]):
        if issubclass(cls, base) and cls is not base and cls.from_config.__func__ is base.from_config.__func__:
            return base.__name__
    return None


def _subclass_message(name, base):
    return (f"{name} is a subclass of ck.{base}; a model file holds data, never code, so ck.load cannot rebuild "
            f"{name}. As in torch, save the weights (ck.zoo.export_torch_state_dict(model, 'w.safetensors')), "
            f"rebuild {name}(...) in code and load them with model.load_state_dict('w.safetensors')")


def _check_subclasses(model):
    for path_, layer in [("", model)] + list(model.named_layers() if hasattr(model, "named_layers") else []):
        if "Module" in _BASES and isinstance(layer, _BASES["Module"]):
            raise TypeError(f"save: {_subclass_message(type(layer).__name__, 'Module')}")
        base = _custom_model_class(layer)
        if base:
            raise TypeError(f"save: {_subclass_message(type(layer).__name__, base)}")


def save(model, path):
    """Save `model` (a Layer or a model) to `path` as safetensors + JSON architecture, atomically."""
    from safetensors.numpy import save as st_save
    if not isinstance(model, _BASES["Layer"]):
        raise TypeError(f"save: expected a ck.Layer or model, got {type(model).__name__}")
    _check_subclasses(model)
    tensors = _tensors(model)
    arch = _layer_config(model.name or "model", model)
    meta = {"format": FORMAT, "version": str(VERSION), "architecture": json.dumps(arch),
            "rng": json.dumps({k: [str(s), str(o)] for k, (s, o) in model.rng_state().items()}),
            "training": json.dumps(model.training), "sha256": _digest(tensors)}
    atomic_write(path, st_save(tensors, metadata=meta))


def save_any(obj, path):
    """ck.save(obj, path). A Sequential, a Graph or a built-in layer is written in the model format, as
    model.save does (ck.load rebuilds it). Anything else is data: nested dicts (str keys), lists and tuples
    of numpy / CuPy arrays (a CuPy array is saved from a host copy), numpy scalars, ints, floats, bools, None
    and str, such as ``{"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}``, written as
    one safetensors file (arrays as tensors, the structure as JSON in its metadata; never pickle); ck.load
    returns it as it went in (tuples as tuples, every array as a numpy array of its dtype). A ck.Module is
    code, not data: save its state_dict(). The write is atomic."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save: path must be a str or os.PathLike, got {type(path).__name__}")
    if "Module" in _BASES and isinstance(obj, _BASES["Module"]):
        raise TypeError(f"save: {type(obj).__name__} is a ck.Module, which is Python code, not data; save its "
                        f"weights with ck.save(model.state_dict(), path), rebuild {type(obj).__name__}(...) in code "
                        f"and restore them with model.load_state_dict(ck.load(path))")
    if isinstance(obj, _BASES["Layer"]):
        return save(obj, path)
    return _objfile.save_object(obj, path)


def _corrupt(path, why):
    return ModelFileError(f"load: {path} is not a valid cnnkit model file ({why}); it may be truncated or corrupted")


def _pos_int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _pair_prod(v):
    if isinstance(v, list) and len(v) == 2:
        return _pos_int(v[0]) * _pos_int(v[1])
    return _pos_int(v) ** 2


def _conv_out(n, k, s, p):
    return max((n + 2 * p - k) // s + 1, 0) if s > 0 else 0


def _pairs(v):
    if isinstance(v, list) and len(v) == 2:
        return _pos_int(v[0]), _pos_int(v[1])
    return (_pos_int(v),) * 2


def _nonneg_pairs(v):
    ok = lambda x: x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else 0  # noqa: E731
    return (ok(v[0]), ok(v[1])) if isinstance(v, list) and len(v) == 2 else (ok(v),) * 2


def _param_shapes(cls, cfg):
    """{parameter or buffer name: shape} of a built-in layer, computed from its config without building it
    (the layers whose parameters grow with their arguments); None for any other class. A malformed value
    counts 0 here: the layer's own constructor then names it."""
    g = cfg.get
    bias = g("bias", True) is not False
    if cls == "Linear":
        i, o = _pos_int(g("in_features")), _pos_int(g("out_features"))
        return {"weight": (o, i), **({"bias": (o,)} if bias else {})}
    if cls == "Conv2d":
        i, o, groups = _pos_int(g("in_channels")), _pos_int(g("out_channels")), _pos_int(g("groups", 1)) or 1
        R, S = _pairs(g("kernel_size"))
        return {"weight": (o, i // groups, R, S), **({"bias": (o,)} if bias else {})}
    if cls == "LocallyConnected2d":
        i, o = _pos_int(g("in_channels")), _pos_int(g("out_channels"))
        (R, S), (sh, sw) = _pairs(g("kernel_size")), _pairs(g("stride", 1))
        (ph, pw), (H, W) = _nonneg_pairs(g("padding", 0)), _pairs(g("in_size"))
        P, Q = _conv_out(H, R, sh, ph), _conv_out(W, S, sw, pw)
        return {"weight": (P, Q, o, i, R, S), **({"bias": (o, P, Q)} if bias else {})}
    if cls.startswith("BatchNorm"):
        n = _pos_int(g("num_features"))
        out = {"weight": (n,), "bias": (n,)} if g("affine", True) is not False else {}
        if g("track_running_stats", True) is not False:
            out.update(running_mean=(n,), running_var=(n,))
        return out
    return None


def _walk_architecture(path, arch):
    """-> ({tensor name: shape} of the built-in layers the architecture describes, depth). Checks the
    nesting (at most MAX_DEPTH models deep) and that every node is a {"class", "config"} object, without
    building anything and without recursion."""
    shapes, stack, deepest = {}, [(arch, "", 0)], 0
    while stack:
        node, prefix, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _corrupt(path, f"architecture: models nested more than {MAX_DEPTH} deep")
        deepest = max(deepest, depth)
        if not isinstance(node, dict) or not isinstance(node.get("class"), str) or not isinstance(
                node.get("config", {}), dict):
            raise _corrupt(path, f"architecture: a layer must be an object with a 'class' name and a 'config' "
                                 f"object, got {str(node)[:100]}")
        cls, cfg = node["class"], node.get("config", {})
        klass = _REGISTRY.get(cls)
        if klass is not None and _custom_model_class(klass):
            raise ModelFileError(f"load: {path}: {_subclass_message(cls, _custom_model_class(klass))}")
        kids = cfg.get("layers") if cls == "Sequential" else cfg.get("nodes") if cls == "Graph" else None
        if cls in _CONTAINERS:
            if not isinstance(kids, list):
                what = "layers" if cls == "Sequential" else "nodes"
                raise _corrupt(path, f"architecture: {cls} needs a list of {what}, got {type(kids).__name__}")
            for k, c in enumerate(kids):
                name = c.get("name") if isinstance(c, dict) and cls == "Graph" else str(k)
                stack.append((c, f"{prefix}{name}.", depth + 1))
            continue
        own = _param_shapes(cls, cfg)
        for n, shp in (own or {}).items():
            shapes[prefix + n] = shp
    return shapes, deepest


def load(path):
    """ck.load(path): the model a model file holds (model.save, or ck.save of a Sequential / Graph / layer), or
    the data ck.save wrote (see save_any: cnnkit._objfile); the file's metadata says which. A data file's
    problems are an ObjectFileError (a ValueError) naming the file and the reason.

    A model file is rebuilt: architecture, weights, buffers, frozen flags, random streams.

    Everything in the file is checked before anything is built: the header (an object whose tensor entries
    have a known dtype, a shape and offsets that fit the file), the architecture (objects, nesting at most
    MAX_DEPTH deep, no subclass of Sequential/Graph), and the shape of every built-in layer's parameters
    against the header, so a small file cannot make load allocate a large model. Any problem is a
    ModelFileError (a ValueError) naming the file and what is wrong."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    hlen, header, meta = read_header(path, data, _corrupt)
    if meta.get("format") == _objfile.FORMAT:
        return _objfile.load_object(path, data, hlen, header, meta)
    if meta.get("format") != FORMAT:
        raise _corrupt(path, f"metadata format is {meta.get('format')!r}, expected {FORMAT!r} (or "
                             f"{_objfile.FORMAT!r}, ck.save of data)")
    check_version(path, meta, VERSION, _corrupt, ModelFileError)
    entries = {k: shape for k, (_, shape) in check_entries(path, data, hlen, header, _corrupt).items()}
    try:
        arch = json.loads(meta.get("architecture", ""))
        rng = json.loads(meta.get("rng", "{}"))
        training = json.loads(meta.get("training", "true"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise _corrupt(path, f"architecture/rng/training metadata is not JSON (or nests too deep): "
                             f"{str(e)[:200]}") from None
    if not isinstance(arch, dict):
        raise _corrupt(path, f"architecture must be a JSON object, got {type(arch).__name__}")
    if not (isinstance(rng, dict) and all(isinstance(v, list) and len(v) == 2 and all(
            isinstance(x, str) and x.isascii() and x.isdigit() for x in v) for v in rng.values())):
        raise _corrupt(path, "metadata field 'rng' must map layer paths to [seed, offset] decimal strings")
    if not isinstance(training, bool):
        raise _corrupt(path, f"metadata field 'training' must be true or false, got {training!r}"[:200])
    want_shapes, _ = _walk_architecture(path, arch)
    for n, shp in want_shapes.items():
        if entries.get(n) != shp and not (n.endswith(("running_mean", "running_var")) and n not in entries):
            got = entries.get(n)
            raise _corrupt(path, f"architecture: tensor {n!r} should have shape {shp} for the layer the "
                                 f"architecture describes, the file holds {'none' if got is None else got}")
    tensors = load_tensors(path, data, meta, _corrupt)
    try:
        model = _layer_from_config(arch)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, MemoryError,
            RecursionError) as e:
        raise _corrupt(path, f"architecture: {e!r}"[:1000]) from None
    model.name = arch.get("name") if arch.get("name") != "model" else None
    want = dict(model.named_parameters())
    bufs = {}
    for path_, l in model.named_layers():
        for k in l._buffers:
            bufs[(path_ + "." if path_ else "") + k] = (l, k)
    missing = sorted((set(want) | set(bufs)) - set(tensors))
    extra = sorted(set(tensors) - set(want) - set(bufs))
    if missing or extra:
        raise ModelFileError(f"load: {path}: tensors do not match the architecture; missing {missing}, "
                             f"unexpected {extra}")
    for n, p in want.items():
        a = tensors[n]
        if a.shape != p.data.shape:
            raise ModelFileError(f"load: {path}: {n} has shape {a.shape}, the architecture expects {p.data.shape}")
    for n, (l, k) in bufs.items():
        a, want_shape = tensors[n], np.shape(l._buffers[k])
        if a.size != int(np.prod(want_shape)):
            raise ModelFileError(f"load: {path}: buffer {n} has shape {a.shape}, the architecture expects "
                                 f"{want_shape}")
    for n, p in want.items():
        p.data = np.ascontiguousarray(tensors[n])
        p.grad = np.zeros_like(p.data)
    for n, (l, k) in bufs.items():
        l._buffers[k] = np.ascontiguousarray(tensors[n]).reshape(np.shape(l._buffers[k]))   # 0-d may be (1,)
    model.set_rng_state({k: (int(s), int(o)) for k, (s, o) in rng.items()})
    model.train(training)
    return model


__all__ = ["save", "save_any", "load", "atomic_write", "ModelFileError", "ObjectFileError"]
ObjectFileError = _objfile.ObjectFileError
