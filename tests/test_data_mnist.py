"""MNIST / Fashion-MNIST IDX files, plain and gzip, built small in their real layout, then corrupted or
inflated: every bad file must raise DataFormatError naming the file and what was wrong."""
import gzip
import os
import struct

import numpy as np
import pytest

from cnnkit import data as D
from cnnkit.data import DataFormatError
from helpers.dataset_files import HEADROOM, RNG, ZEROS_MIB_GZ, idx_bytes, isolated_error


@pytest.fixture(params=[False, True], ids=["raw", "gz"])
def mnist_dir(tmp_path, request):
    gz = request.param
    truth = {}
    for stem, n in (("train", 5), ("t10k", 3)):
        x = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = RNG.integers(0, 10, n).astype(np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = tmp_path / (f"{stem}-{kind}-ubyte" + (".gz" if gz else ""))
            blob = idx_bytes(arr)
            name.write_bytes(gzip.compress(blob) if gz else blob)
        truth[stem] = (x, y)
    return tmp_path, gz, truth


def test_mnist_reads(mnist_dir):
    root, _, truth = mnist_dir
    s = D.load_mnist(root, dtype=np.uint8)
    np.testing.assert_array_equal(s["train"].x[:, 0], truth["train"][0])
    np.testing.assert_array_equal(s["test"].y, truth["t10k"][1])
    f = D.load_fashion_mnist(root)
    assert f["train"].x.dtype == np.float32 and f["train"].classes[-1] == "Ankle boot"
    np.testing.assert_allclose(f["test"].x[:, 0], truth["t10k"][0] / 255.0, rtol=1e-6)


def _rewrite(path, gz, fn):
    blob = path.read_bytes()
    blob = gzip.decompress(blob) if gz else blob
    blob = fn(blob)
    path.write_bytes(gzip.compress(blob) if gz else blob)


@pytest.mark.parametrize("what,fn,match", [
    ("images", lambda b: b[:-10], r"truncated: header says shape \(5, 28, 28\) = 3920 bytes of data, file has 3910"),
    ("images", lambda b: b + b"\0", "trailing bytes"),
    ("images", lambda b: b"\0\0\x08\x01" + b[4:], "bad magic number 0x00000801, expected 0x00000803"),
    ("labels", lambda b: b"\x12\x34" + b[2:], "bad magic number 0x12340801, expected 0x00000801"),
    ("labels", lambda b: b[:8] + bytes([11]) + b[9:], "mislabelled: entry 0 has label 11"),
    ("labels", lambda b: idx_bytes(np.zeros(4, np.uint8)), "4 labels for 5 images"),
    ("labels", lambda b: b[:2], "truncated: 2 bytes, shorter than the 4-byte IDX magic number"),
])
def test_mnist_corrupt(mnist_dir, what, fn, match):
    root, gz, _ = mnist_dir
    p = root / (f"train-{what}-idx{3 if what == 'images' else 1}-ubyte" + (".gz" if gz else ""))
    _rewrite(p, gz, fn)
    with pytest.raises(DataFormatError, match=match) as e:
        D.load_mnist(root)
    assert os.fspath(p) in str(e.value)


def test_idx_truncated_gzip_and_other_types(tmp_path):
    p = tmp_path / "a.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))[:-12])
    with pytest.raises(DataFormatError, match="a.gz: truncated or corrupt gzip stream"):
        D.read_idx(p)
    q = tmp_path / "f.idx"
    arr = RNG.standard_normal((3, 4)).astype(np.float32)
    q.write_bytes(idx_bytes(arr, 0x0D))
    np.testing.assert_array_equal(D.read_idx(q), arr)
    q.write_bytes(b"\0\0\x07\x01\0\0\0\0")
    with pytest.raises(DataFormatError, match="not an IDX file"):
        D.read_idx(q)


def test_idx_gz_reads_only_what_the_header_claims(tmp_path, run_isolated):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    # the header claims 2 images, the stream inflates to 256 MiB more (a gzip file may hold many members)
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28), np.uint8))) + ZEROS_MIB_GZ * 256)
    assert p.stat().st_size < 400_000
    isolated_error(run_isolated, "D.read_idx", p, r"trailing bytes: header says shape \(2, 28, 28\) = 1568 "
                                                  r"bytes of data, the gzip stream holds more",
                   memory_headroom=HEADROOM)
    # an honest header and 256 MiB of zeros: more than 100 times the compressed size is refused before reading
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 4096, 256, 256)) + ZEROS_MIB_GZ * 256)
    isolated_error(run_isolated, "D.read_idx", p, r"header says shape \(4096, 256, 256\) = 268435456 bytes of "
                                                  rf"data, more than 100 times the {p.stat().st_size} bytes of the "
                                                  r"compressed file \(refused as a decompression bomb\)",
                   memory_headroom=HEADROOM)
