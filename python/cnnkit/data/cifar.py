"""CIFAR-10 and CIFAR-100: the binary record files and the dataset folders (binary or "python" pickles)."""
import os
import pathlib

import numpy as np

from ._common import ArrayDataset, DataFormatError
from ._files import _read_bytes, _scale
from .cifar_pickle import _cifar_pickle_batch, read_cifar_pickle

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


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
