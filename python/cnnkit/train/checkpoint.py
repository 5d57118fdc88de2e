"""Trainer checkpoints: tensors in safetensors, everything else in JSON beside them,
never pickle, always atomic.

A checkpoint at step N is two files, ``ckpt-0000000N-Q.safetensors`` (Q: a sequence number; weights,
buffers, optimizer state arrays, and any other arrays a component's state holds) and ``ckpt-0000000N-Q.json``
(step, epoch, history,
the data loader's position, every RNG counter, the schedule, scalar optimizer state, and a SHA-256 of the
tensor file). Each is written atomically, and only then is ``latest.json`` (the pointer ``fit(resume=...)``
reads) replaced, atomically. A run killed at any moment therefore leaves the previous complete checkpoint
in force; no file the pointer names is ever rewritten, and older checkpoints are removed only after the
pointer moves past them.
"""
import hashlib
import json
import math
import os
import re

import numpy as np

from .._xp import is_device_array
from .._io import atomic_write

FORMAT = "cnnkit.checkpoint"
VERSION = 1
POINTER = "latest.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or from an incompatible model or run."""


def host(a):
    """A C-contiguous numpy copy-or-view of a numpy or CuPy array (a device array is read back: one sync)."""
    return np.ascontiguousarray(a.get() if is_device_array(a) else a)


def split_arrays(obj, prefix, tensors):
    """Replace every numpy or CuPy array inside nested dicts/lists by {"__tensor__": key}, moving it (to the
    host) into `tensors`. numpy scalars become Python numbers and tuples become lists, so the rest is plain
    JSON."""
    if isinstance(obj, np.ndarray) or is_device_array(obj):
        key = prefix
        tensors[key] = host(obj)
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {str(k): split_arrays(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_arrays(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def join_arrays(obj, tensors):
    """Inverse of split_arrays."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]].copy()
        return {k: join_arrays(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_arrays(v, tensors) for v in obj]
    return obj


def model_signature(model):
    """Names, shapes and dtypes of every parameter and buffer: what a compatible model must have."""
    sig = {f"param/{n}": [list(p.shape), str(p.dtype)] for n, p in model.named_parameters()}
    sig.update({f"buffer/{n}": [list(b.shape), str(b.dtype)] for n, b in model.named_buffers()})
    return sig


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


_NAME = re.compile(r"ckpt-(\d{8,})(?:-(\d+))?\.(?:json|safetensors)\Z")


def _existing(folder):
    """{stem: (sequence, step)} of the checkpoint files in `folder` (a stem without a sequence number counts 0)."""
    out = {}
    for f in os.listdir(folder):
        m = _NAME.match(f)
        if m:
            out[f.rsplit(".", 1)[0]] = (int(m.group(2) or 0), int(m.group(1)))
    return out


# atomic_write's temporaries for our own files: "." + the final name + "." + mkstemp's 8 characters + ".tmp"
_TEMP = re.compile(r"\.(?:ckpt-\d{8,}(?:-\d+)?\.(?:json|safetensors)|" + re.escape(POINTER) + r")\.[a-z0-9_]{8}\.tmp\Z")


def clean_stale_temporaries(folder):
    """Remove the temporary files a writer killed inside atomic_write left in a checkpoint folder: only
    those of our own naming pattern (checkpoint files and the pointer), never anything else. Called when a
    run starts or resumes in the folder (one run writes a folder at a time)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for f in names:
        if _TEMP.match(f):
            try:
                os.unlink(os.path.join(folder, f))
                removed.append(f)
            except FileNotFoundError:
                pass
    return removed


def write_checkpoint(folder, step, state, tensors, keep=2):
    """Write one checkpoint (state: JSON-able dict; tensors: name -> array) and move the pointer to it.

    Every checkpoint gets names no earlier one used (step and a sequence number one past the folder's
    highest), so the pair the pointer names is never rewritten: the epoch-end checkpoint at the step of a
    per-step one, or a run restarted in the folder, writes beside it, and a kill at any moment leaves the
    pointer on a complete, matching pair."""
    from safetensors.numpy import save as st_save
    os.makedirs(folder, exist_ok=True)
    seq = max((q for q, _ in _existing(folder).values()), default=0) + 1
    stem = f"ckpt-{int(step):08d}-{seq:06d}"
    blob = st_save(tensors, metadata={"format": FORMAT})
    atomic_write(os.path.join(folder, stem + ".safetensors"), blob)
    doc = {"format": FORMAT, "version": VERSION, "step": int(step), "tensors": stem + ".safetensors",
           "tensors_sha256": _sha256(blob), "state": state}
    atomic_write(os.path.join(folder, stem + ".json"), json.dumps(doc).encode())
    atomic_write(os.path.join(folder, POINTER), json.dumps({"format": FORMAT, "checkpoint": stem + ".json"}).encode())
    _prune(folder, keep, current=stem)
    return os.path.join(folder, stem + ".json")


def _prune(folder, keep, current):
    """Remove all but the newest `keep` checkpoints (the current one, which the pointer names, always stays);
    leftovers of an interrupted write (a tensor file without its JSON) go too once they are older."""
    found = _existing(folder)
    stems = sorted((s for s in found if s != current), key=lambda s: found[s])
    old = stems[:-(keep - 1)] if keep > 1 else stems
    for s in old:
        for ext in (".json", ".safetensors"):
            try:
                os.unlink(os.path.join(folder, s + ext))
            except FileNotFoundError:
                pass


def _bad(path, field, why):
    return CheckpointError(f"resume: {path}: field {field!r} {why}")


def plain_name(path, field, value):
    """`value` (field `field` of the file `path`) as a plain file name inside the checkpoint folder: a
    checkpoint names its files relative to its own folder and may never reach outside it."""
    if not isinstance(value, str):
        raise _bad(path, field, f"must be a file name (a string), got {type(value).__name__}")
    if (not value or value in (".", "..") or "\0" in value or "/" in value or os.sep in value
            or (os.altsep and os.altsep in value) or os.path.isabs(value) or value.startswith("~")):
        raise _bad(path, field, f"must be a plain file name inside the checkpoint folder, got {value!r}")
    return value


def _read_json(path, what):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"resume: {path} is not a readable {what} ({str(e)[:200]}); "
                              f"it may be truncated") from None


def resolve(path):
    """A checkpoint folder (its latest.json), a latest.json, or a ckpt-*.json -> the ckpt-*.json path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, POINTER)
    if not os.path.exists(path):
        raise CheckpointError(f"resume: no checkpoint at {path}")
    if os.path.basename(path) == POINTER:
        try:
            with open(path) as f:
                ptr = json.load(f)
        except (OSError, ValueError, RecursionError) as e:
            raise CheckpointError(f"resume: {path} is not a valid checkpoint pointer ({str(e)[:200]})") from None
        if not isinstance(ptr, dict) or "checkpoint" not in ptr:
            raise CheckpointError(f"resume: {path} is not a valid checkpoint pointer (field 'checkpoint' missing)")
        return os.path.join(os.path.dirname(path), plain_name(path, "checkpoint", ptr["checkpoint"]))
    return path


def real_int(path, field, v, minimum=0):
    """`v` as an int (a real JSON integer, not a bool or float) >= minimum, else a CheckpointError."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(path, field, f"must be an integer, got {v!r}"[:300])
    if v < minimum:
        raise _bad(path, field, f"must be >= {minimum}, got {v}")
    return v


def read_checkpoint(path):
    """-> (state, tensors). Raises CheckpointError for anything missing, truncated or altered."""
    from safetensors.numpy import load as st_load
    path = resolve(path)
    doc = _read_json(path, "checkpoint")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"resume: {path} is not a cnnkit checkpoint (format {doc.get('format')!r})"
                              if isinstance(doc, dict) else f"resume: {path} is not a cnnkit checkpoint")
    for k in ("version", "step", "tensors", "tensors_sha256", "state"):
        if k not in doc:
            raise _bad(path, k, "is missing")
    version = real_int(path, "version", doc["version"], minimum=1)
    if version > VERSION:
        raise CheckpointError(f"resume: {path} has version {version}, newer than this cnnkit ({VERSION})")
    step = real_int(path, "step", doc["step"])
    if not isinstance(doc["state"], dict):
        raise _bad(path, "state", f"must be an object, got {type(doc['state']).__name__}")
    if "step" in doc["state"] and doc["state"]["step"] != step:
        got = doc["state"]["step"]
        raise _bad(path, "state.step", f"is {got!r}, but the checkpoint is for step {step} (step)"[:300])
    sha = doc["tensors_sha256"]
    if not isinstance(sha, str) or len(sha) != 64:
        raise _bad(path, "tensors_sha256", f"must be a SHA-256 hex digest, got {sha!r}"[:300])
    tpath = os.path.join(os.path.dirname(path), plain_name(path, "tensors", doc["tensors"]))
    try:
        with open(tpath, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise CheckpointError(f"resume: tensor file of {path} is missing ({e})") from None
    if _sha256(blob) != sha:
        raise CheckpointError(f"resume: {tpath} does not match its checksum in {path}; it is truncated or corrupted")
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors' own error type
        raise CheckpointError(f"resume: {tpath} is not valid safetensors ({e})") from None
    return doc["state"], tensors


MAX_LR = 1e6   # a checkpoint's learning rates lie in [0, MAX_LR]: above, every update overflows float32 weights


def _number(path, field, v, minimum=None, maximum=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(path, field, f"must be a number, got {v!r}"[:300])
    try:
        ok = math.isfinite(v)
    except OverflowError:   # an int too large for a float
        ok = False
    if not ok:
        raise _bad(path, field, f"must be finite, got {v!r}"[:300])
    if minimum is not None and v < minimum:
        raise _bad(path, field, f"must be >= {minimum}, got {v!r}")
    if maximum is not None and v > maximum:
        raise _bad(path, field, f"must be <= {maximum:g}, got {v!r}")
    return v


def _kind(path, field, v, types, what):
    if not isinstance(v, types):
        raise _bad(path, field, f"must be {what}, got {type(v).__name__}")
    return v


def _finite_tree(path, field, v):
    """Every number inside lists/dicts `v` finite (hyperparameters: an lr of Infinity is never valid)."""
    if isinstance(v, dict):
        for k, x in v.items():
            _finite_tree(path, f"{field}.{k}", x)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _finite_tree(path, f"{field}[{i}]", x)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        _number(path, field, v)


def check_state(path, state):
    """Check the shape, types and ranges of a trainer checkpoint's state before anything is changed, so a
    tampered or corrupted file is a CheckpointError naming the file and the field, never a half-restored
    model. Cross-checks: epoch <= step, one history row per finished epoch, and the loader's position is in
    the epoch the trainer is in (or just past it when the epoch's steps were done)."""
    req = ("step", "epoch", "acc", "model_signature", "model_rng", "optimizer", "schedule", "loader", "history")
    for k in req:
        if k not in state:
            raise _bad(path, f"state.{k}", "is missing")
    step = real_int(path, "state.step", state["step"])
    epoch = real_int(path, "state.epoch", state["epoch"])
    if epoch > step:
        raise _bad(path, "state.epoch", f"is {epoch}, more epochs than the {step} steps (state.step) taken")
    if "world_size" in state:   # the data-parallel ranks it was written by (absent: one process)
        real_int(path, "state.world_size", state["world_size"], minimum=1)
    done = state.get("epoch_steps_done", False)
    _kind(path, "state.epoch_steps_done", done, bool, "true or false")
    acc = state["acc"]
    if acc is not None:
        _kind(path, "state.acc", acc, dict, "null or an object")
        for k, lo in (("loss", None), ("seconds", 0)):
            _number(path, f"state.acc.{k}", acc.get(k), lo)
        for k in ("correct", "count"):
            real_int(path, f"state.acc.{k}", acc.get(k))
        for k in ("loss_count", "steps", "skipped"):   # absent or null in checkpoints of older versions
            if acc.get(k) is not None:
                real_int(path, f"state.acc.{k}", acc[k])
    elif done:
        raise _bad(path, "state.epoch_steps_done", "is true but state.acc (the epoch's sums) is null")
    _kind(path, "state.model_signature", state["model_signature"], dict, "an object")
    rng = _kind(path, "state.model_rng", state["model_rng"], dict, "an object")
    for k, v in rng.items():
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) and x.isdigit() for x in v)):
            raise _bad(path, f"state.model_rng.{k}", f"must be [seed, offset] as decimal strings, got {v!r}"[:300])
    opt = _kind(path, "state.optimizer", state["optimizer"], dict, "an object")
    groups = _kind(path, "state.optimizer.param_groups", opt.get("param_groups"), list, "a list")
    _kind(path, "state.optimizer.state", opt.get("state"), list, "a list")
    for i, g in enumerate(groups):
        _kind(path, f"state.optimizer.param_groups[{i}]", g, dict, "an object")
        _number(path, f"state.optimizer.param_groups[{i}].lr", g.get("lr"), 0, MAX_LR)
        _finite_tree(path, f"state.optimizer.param_groups[{i}]", {k: v for k, v in g.items() if k != "params"})
    for i, st in enumerate(opt["state"]):
        _kind(path, f"state.optimizer.state[{i}]", st, dict, "an object")
        if "step" in st:
            real_int(path, f"state.optimizer.state[{i}].step", st["step"])
    if "skipped_steps" in opt:
        real_int(path, "state.optimizer.skipped_steps", opt["skipped_steps"])
    sch = state["schedule"]
    if sch is not None:
        _kind(path, "state.schedule", sch, dict, "null or an object")
        real_int(path, "state.schedule.t", sch.get("t"))
        if "base_lrs" in sch:
            for i, v in enumerate(_kind(path, "state.schedule.base_lrs", sch["base_lrs"], list, "a list")):
                _number(path, f"state.schedule.base_lrs[{i}]", v, 0, MAX_LR)
    ld = state["loader"]
    if ld is not None:
        _kind(path, "state.loader", ld, dict, "null or an object")
        le = real_int(path, "state.loader.epoch", ld.get("epoch"))
        lb = real_int(path, "state.loader.batch", ld.get("batch"))
        want = epoch + 1 if done else epoch
        if le != want or (done and lb != 0):
            raise _bad(path, "state.loader.epoch", f"is {le} (batch {lb}), but the trainer is in epoch {epoch}"
                       f"{' with its steps done' if done else ''} (state.epoch)")
    hist = _kind(path, "state.history", state["history"], dict, "an object")
    its = _kind(path, "state.history.iterations", hist.get("iterations"), dict, "an object")
    for k, v in its.items():
        _kind(path, f"state.history.iterations.{k}", v, list, "a list")
    rows = _kind(path, "state.history.epochs", hist.get("epochs"), list, "a list")
    for i, r in enumerate(rows):
        _kind(path, f"state.history.epochs[{i}]", r, dict, "an object")
    for i, r in enumerate(_kind(path, "state.history.ratios", hist.get("ratios"), list, "a list")):
        _kind(path, f"state.history.ratios[{i}]", r, dict, "an object")
    _kind(path, "state.history.events", hist.get("events", []), list, "a list")
    _kind(path, "state.history.stop_reason", hist.get("stop_reason"), (str, type(None)), "null or a string")
    if len(rows) != epoch:
        raise _bad(path, "state.epoch", f"is {epoch}, but state.history.epochs has {len(rows)} finished epochs")
    cbs = _kind(path, "state.callbacks", state.get("callbacks", []), list, "a list")
    for i, c in enumerate(cbs):
        _kind(path, f"state.callbacks[{i}]", c, dict, "an object")
    return state
