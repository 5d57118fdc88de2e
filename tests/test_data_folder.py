"""Image folders read with Pillow."""
import sys

import numpy as np
import pytest

from cnnkit import data as D
from cnnkit.data import DataFormatError
from helpers.dataset_files import RNG


def test_image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    truth = []
    for label, cls in enumerate(["cat", "dog"]):
        (tmp_path / cls).mkdir()
        for i in range(3):
            a = RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / cls / f"{i}.png")
            truth.append((a, label))
    ds = D.load_image_folder(tmp_path, dtype=np.uint8)
    assert ds.classes == ["cat", "dog"] and ds.x.shape == (6, 3, 6, 5)
    for k, (a, label) in enumerate(truth):
        np.testing.assert_array_equal(ds.x[k], a.transpose(2, 0, 1))
        assert ds.y[k] == label
    assert D.load_image_folder(tmp_path, mode="L", size=(4, 4)).x.shape == (6, 1, 4, 4)
    Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(tmp_path / "dog" / "3.png")
    with pytest.raises(DataFormatError, match=r"3\.png: image is 7x5 but .*0\.png is 6x5; pass size"):
        D.load_image_folder(tmp_path)
    (tmp_path / "dog" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataFormatError, match=r"3\.png: unreadable or corrupt image"):
        D.load_image_folder(tmp_path)
    good = (tmp_path / "dog" / "0.png").read_bytes()
    (tmp_path / "dog" / "3.png").write_bytes(good[:len(good) // 2])  # truncated PNG
    with pytest.raises(DataFormatError, match=r"3\.png: unreadable or corrupt image"):
        D.load_image_folder(tmp_path)


def test_image_folder_without_pillow_says_how_to_get_it(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(ImportError, match=r"needs Pillow, an optional dependency: pip install 'cnnkit\[images\]'"):
        D.load_image_folder(tmp_path)
