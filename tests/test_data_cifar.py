"""CIFAR-10/100 binary record files, built small in their real layout, then corrupted: every bad file must
raise DataFormatError naming the file and what was wrong."""
import numpy as np
import pytest

from cnnkit import data as D
from cnnkit.data import DataFormatError
from helpers.dataset_files import RNG, cifar_records


@pytest.fixture
def cifar10_bin(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    truth = {"train": [], "test": []}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels, pixels, blob = cifar_records(3)
        (d / name).write_bytes(blob)
        truth["test" if name.startswith("test") else "train"].append((labels[:, 0], pixels))
    (d / "batches.meta.txt").write_text("\n".join(D.datasets.CIFAR10_CLASSES) + "\n")
    return tmp_path, d, truth


def test_cifar10_binary_reads(cifar10_bin):
    root, d, truth = cifar10_bin
    s = D.load_cifar10(root)
    assert s["train"].x.shape == (15, 3, 32, 32) and s["test"].x.shape == (3, 3, 32, 32)
    pixels = np.concatenate([p for _, p in truth["train"]])
    np.testing.assert_array_equal(s["train"].y, np.concatenate([lab for lab, _ in truth["train"]]))
    np.testing.assert_allclose(s["train"].x.reshape(15, -1), pixels / 255.0, rtol=1e-6)
    raw = D.load_cifar10(d, format="binary", dtype=np.uint8)
    np.testing.assert_array_equal(raw["train"].x.reshape(15, -1), pixels)  # R plane, G plane, B plane
    assert raw["train"].classes[0] == "airplane"


@pytest.mark.parametrize("corrupt,match", [
    (lambda b: b[:-1], "truncated or corrupt: size 9218 bytes is not a multiple of the record size 3073"),
    (lambda b: b"", "file is empty"),
    (lambda b: b[:3073] + bytes([10]) + b[3074:], "mislabelled: record 1 has label 10, expected 0..9"),
])
def test_cifar10_binary_corrupt(cifar10_bin, corrupt, match):
    root, d, _ = cifar10_bin
    p = d / "data_batch_3.bin"
    p.write_bytes(corrupt(p.read_bytes()))
    with pytest.raises(DataFormatError, match=match) as e:
        D.load_cifar10(root)
    assert str(p) in str(e.value)


def test_cifar100_binary(tmp_path):
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    for split in ("train", "test"):
        labels = np.stack([RNG.integers(0, 20, 4), RNG.integers(0, 100, 4)], axis=1).astype(np.uint8)
        pixels = RNG.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        (d / f"{split}.bin").write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    fine, coarse = D.load_cifar100(tmp_path), D.load_cifar100(tmp_path, label_mode="coarse")
    raw = np.frombuffer((d / "test.bin").read_bytes(), np.uint8).reshape(4, -1)
    np.testing.assert_array_equal(fine["test"].y, raw[:, 1])
    np.testing.assert_array_equal(coarse["test"].y, raw[:, 0])
    blob = bytearray((d / "train.bin").read_bytes())
    blob[3074 * 2 + 1] = 100  # fine label of record 2
    (d / "train.bin").write_bytes(bytes(blob))
    with pytest.raises(DataFormatError, match="train.bin: mislabelled: record 2 has label 100, expected 0..99"):
        D.load_cifar100(tmp_path)
    with pytest.raises(ValueError, match="label_mode"):
        D.load_cifar100(tmp_path, label_mode="both")
