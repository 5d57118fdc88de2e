"""Datasets from numpy arrays and .npz files, and the .npz member size checks before reading."""
import zipfile

import numpy as np
import pytest

from cnnkit import data as D
from cnnkit.data import DataFormatError
from helpers.dataset_files import HEADROOM, RNG, isolated_error


def _npz_with(tmp_path, x_member, compress=zipfile.ZIP_STORED):
    import io
    p = tmp_path / "d.npz"
    y = io.BytesIO()
    np.lib.format.write_array(y, np.zeros(4, np.int64))
    with zipfile.ZipFile(p, "w", compression=compress) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            x_member(f)
        z.writestr("y.npy", y.getvalue())
    return p


def test_npz_member_size_is_checked_before_reading(tmp_path, run_isolated):
    def claims_4tib(f):
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (1 << 42,)})
        f.write(bytes(16))
    p = _npz_with(tmp_path, claims_4tib)
    isolated_error(run_isolated, "D.load_npz", p, r"d\.npz: member x\.npy: header says shape \(4398046511104,\) "
                                                  r"uint8 = 4398046511104 bytes of data, the member holds 16",
                   memory_headroom=HEADROOM)

    def zeros_64mib(f):
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (4, 4096, 4096)})
        for _ in range(64):
            f.write(bytes(1 << 20))
    p = _npz_with(tmp_path, zeros_64mib, zipfile.ZIP_DEFLATED)
    packed = zipfile.ZipFile(p).getinfo("x.npy").compress_size
    isolated_error(run_isolated, "D.load_npz", p, r"d\.npz: member x\.npy: header says shape \(4, 4096, 4096\) "
                                                  rf"uint8 = 67108864 bytes of data, more than 100 times the {packed} "
                                                  r"compressed bytes \(refused as a decompression bomb\)",
                   memory_headroom=HEADROOM)


def test_npz_and_arrays(tmp_path):
    x = RNG.integers(0, 256, size=(4, 5, 5, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 1])
    p = tmp_path / "d.npz"
    np.savez_compressed(p, images=x, labels=y)
    ds = D.load_npz(p, x_key="images", y_key="labels", layout="NHWC")
    assert ds.x.shape == (4, 3, 5, 5) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x, x.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)
    with pytest.raises(DataFormatError, match=r"d\.npz: missing array\(s\) \['x', 'y'\]"):
        D.load_npz(p)
    blob = p.read_bytes()
    p.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(DataFormatError, match=r"d\.npz: truncated or corrupt \.npz"):
        D.load_npz(p, x_key="images", y_key="labels")
    np.savez(p, x=np.array([object()] * 4, dtype=object), y=y)
    with pytest.raises(DataFormatError, match=r"d\.npz: truncated or corrupt \.npz.*pickle"):
        D.load_npz(p)
    np.savez(p, x=np.zeros((4, 2, 2), np.float32), y=np.arange(3))
    with pytest.raises(DataFormatError, match=r"d\.npz: from_arrays: y must have shape \(4,\)"):
        D.load_npz(p)
    a = D.from_arrays(np.zeros((3, 4, 4), np.float64), np.arange(3), dtype=np.float64)
    assert a.x.shape == (3, 1, 4, 4) and a.x.dtype == np.float64
    with pytest.raises(TypeError, match="y must hold integer labels"):
        D.from_arrays(np.zeros((3, 4, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="layout"):
        D.from_arrays(np.zeros((3, 4, 4, 1)), np.arange(3), layout="HWC")
