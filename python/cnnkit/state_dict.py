"""PyTorch state dicts in and out, without pickle.

``load_torch_state_dict(model, src)`` takes a ``.safetensors`` file (read with safetensors' numpy API: no
torch needed), a ``.pth`` / ``.pt`` file (read with ``torch.load(weights_only=True)``, only when torch is
installed: its restricted unpickler refuses any object but tensors and plain containers, so a file that
would run code on load is rejected before anything runs), or a dict of numpy arrays or torch tensors.
Every name and shape is checked before anything is written, and one error lists what is missing,
unexpected and mismatched. ``export_torch_state_dict(model, path)`` writes torchvision's keys to a
safetensors file atomically (``safetensors.torch.load_file`` reads it into ``model.load_state_dict``).
"""
import os

import numpy as np

from ._xp import array_module
from ._registry import _BASES


def _host(a):
    return a if isinstance(a, np.ndarray) else a.get()    # a CuPy array (model.to("cuda")) comes to the host


class StateDictError(ValueError):
    """A state dict does not fit the model: ``missing``, ``unexpected`` and ``mismatched`` (name, expected
    shape, received shape) say how."""

    def __init__(self, msg, missing=(), unexpected=(), mismatched=()):
        super().__init__(msg)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


def _slots(model):
    """name -> (kind, owner, key) for every parameter and buffer, in model order."""
    out = {}
    for path, layer in model.named_layers():
        pre = path + "." if path else ""
        for k in layer._params:
            out[pre + k] = ("param", layer, k)
        for k in layer._buffers:
            out[pre + k] = ("buffer", layer, k)
    return out


def state_dict(model):
    """torchvision-style state dict of `model`: name -> numpy array (the model's own arrays, not copies)."""
    if not isinstance(model, _BASES["Layer"]):
        raise TypeError(f"zoo.state_dict: model must be a ck.Layer or model, got {type(model).__name__}")
    out = {}
    for name, (kind, layer, k) in _slots(model).items():
        out[name] = layer._params[k].data if kind == "param" else layer._buffers[k]
    return out


def _to_numpy(name, v):
    if isinstance(v, np.ndarray):
        return v
    mod = type(v).__module__
    if mod.startswith("torch"):
        import torch
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"load_torch_state_dict: {name!r} must be an array or a tensor, got {type(v).__name__}")
        t = v.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.contiguous().numpy()
    if isinstance(v, (int, float, np.generic)):
        return np.asarray(v)
    raise TypeError(f"load_torch_state_dict: {name!r} must be a numpy array or a torch tensor, got {type(v).__name__}")


def _read(src):
    if isinstance(src, dict):
        return {str(k): _to_numpy(k, v) for k, v in src.items()}, "the state dict"
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"load_torch_state_dict: path_or_dict must be a path (.safetensors, .pth, .pt) or a dict, "
                        f"got {type(src).__name__}")
    path = os.fspath(src)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_torch_state_dict: no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    low = path.lower()
    if low.endswith(".safetensors"):
        from safetensors.numpy import load_file
        try:
            return load_file(path), path
        except Exception as e:   # safetensors raises its own error types
            raise ValueError(f"load_torch_state_dict: {path} is not a valid safetensors file: {e}") from None
    if low.endswith((".pth", ".pt", ".bin", ".ckpt")) or head[:2] in (b"PK", b"\x80\x02"):
        try:
            import torch
        except ImportError:
            raise ImportError(f"load_torch_state_dict: {path} is a PyTorch pickle file, and reading one safely needs "
                              f"torch (torch.load(weights_only=True)); install torch, or convert the file to "
                              f".safetensors where torch is installed (safetensors.torch.save_file)") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:   # pickle.UnpicklingError for anything that is not plain tensors and containers
            raise ValueError(f"load_torch_state_dict: refused to load {path}: torch.load(weights_only=True) failed, "
                             f"so it holds objects other than tensors and plain containers (a pickle that would "
                             f"run code is refused this way) or it is not a PyTorch file: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]     # a training checkpoint {"state_dict": ..., "epoch": ...}
        if not isinstance(obj, dict):
            raise ValueError(f"load_torch_state_dict: {path} holds a {type(obj).__name__}, expected a state dict")
        return {str(k): _to_numpy(k, v) for k, v in obj.items()}, path
    raise ValueError(f"load_torch_state_dict: cannot tell the format of {path}: expected a .safetensors file or a "
                     f"PyTorch .pth/.pt file")


def _show(names, n=12):
    names = list(names)
    return ", ".join(map(str, names[:n])) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def load_torch_state_dict(model, path_or_dict, strict=True):
    """Copy a torchvision-style state dict into `model`'s parameters and buffers.

    Checks every name and shape first and writes nothing unless all fit: a StateDictError (a ValueError)
    lists the missing, unexpected and shape-mismatched keys. ``strict=False`` tolerates missing and
    unexpected keys (torch's meaning; shapes must still match) and loads what matches. Float values are
    cast to the model's dtype (bit for bit when both are float32); ``num_batches_tracked`` may be 0-d or
    (1,). Returns (missing, unexpected) name lists. Values are copied in place, so an optimizer built over
    the model keeps working."""
    if not isinstance(model, _BASES["Layer"]):
        raise TypeError(f"load_torch_state_dict: model must be a ck.Layer or model, got {type(model).__name__}")
    sd, where = _read(path_or_dict)
    slots = _slots(model)
    missing = [n for n in slots if n not in sd]
    unexpected = [n for n in sd if n not in slots]
    mismatched = []
    for n, (kind, layer, k) in slots.items():
        if n not in sd:
            continue
        want = layer._params[k].data.shape if kind == "param" else np.shape(layer._buffers[k])
        got = sd[n].shape
        ok = tuple(got) == tuple(want) or (kind == "buffer" and sd[n].size == int(np.prod(want)) == 1)
        if not ok:
            mismatched.append((n, tuple(want), tuple(got)))
        elif kind == "param" and not np.issubdtype(sd[n].dtype, np.floating):
            raise TypeError(f"load_torch_state_dict: {n!r} must be floating point, got {sd[n].dtype} in {where}")
    if mismatched or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_show(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_show(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): " + _show(
                f"{n} expected {w} got {g}" for n, w, g in mismatched))
        hint = ""
        if missing and unexpected and len(slots) - len(missing) < len(slots) // 2:
            hint = " (is it a state dict of another architecture?)"
        raise StateDictError(f"load_torch_state_dict: {where} does not fit {model.name or type(model).__name__}"
                             f"{hint}: " + "; ".join(parts), missing, unexpected, mismatched)
    for n, (kind, layer, k) in slots.items():
        if n not in sd:
            continue
        if kind == "param":
            p = layer._params[k]
            p.data[...] = array_module(p.data).asarray(sd[n].astype(p.data.dtype, copy=False))
        else:
            b = layer._buffers[k]
            b[...] = array_module(b).asarray(np.asarray(sd[n]).reshape(np.shape(b)).astype(b.dtype, copy=False))
    return missing, unexpected


def export_torch_state_dict(model, path=None):
    """Write `model`'s parameters and buffers under torchvision's key names to a safetensors file,
    atomically (temp file, fsync, rename). Returns the dict of numpy copies; with ``path=None`` only returns
    it. ``num_batches_tracked`` keeps torch's 0-d int64. PyTorch reads it with
    ``model.load_state_dict(safetensors.torch.load_file(path))``."""
    sd = {n: np.array(_host(v), copy=True) for n, v in state_dict(model).items()}
    if path is not None:
        path = os.fspath(path)
        if not path.lower().endswith(".safetensors"):
            raise ValueError(f"export_torch_state_dict: path must end in .safetensors (cnnkit never writes "
                             f"pickles), got {path!r}")
        from safetensors.numpy import save
        from ._io import atomic_write
        atomic_write(path, save({n: np.ascontiguousarray(a) for n, a in sd.items()}, metadata={"format": "pt"}))
    return sd


__all__ = ["load_torch_state_dict", "export_torch_state_dict", "state_dict", "StateDictError"]
