"""The bundled digits: split, values, pinned content, licence."""
import numpy as np
import pytest

from cnnkit import data as D


def test_digits_split_and_values():
    s = D.load_digits()
    assert [len(s[k]) for k in ("train", "val", "test")] == [1197, 300, 300]
    for ds in s.values():
        assert ds.x.shape[1:] == (1, 8, 8) and ds.x.dtype == np.float32 and ds.y.dtype == np.int64
        assert ds.x.min() == 0.0 and ds.x.max() == 1.0
        assert set(ds.y.tolist()) == set(range(10))
    raw = D.load_digits(dtype=np.uint8)
    np.testing.assert_array_equal(raw["train"].x.astype(np.float32) / 16, s["train"].x)
    # the split is fixed: the same every call, disjoint, covering all 1,797 images
    allx = np.concatenate([raw[k].x.reshape(-1, 64) for k in ("train", "val", "test")])
    assert len(allx) == 1797


def test_digits_file_content_is_pinned():
    import hashlib
    with np.load(D.datasets.DIGITS_FILE) as f:
        blob = f["images"].tobytes() + f["labels"].tobytes() + f["split"].tobytes()
    # printed by tools/make_digits.py; a change to the bundled data or its split must be deliberate
    assert hashlib.sha256(blob).hexdigest() == "83c78958d04f44b7b617f45e57ee435d1b2f063c4bc874580825c3be3a5edb69"


def test_digits_match_scikit_learn():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    with np.load(D.datasets.DIGITS_FILE) as f:
        np.testing.assert_array_equal(f["images"], d.images)
        np.testing.assert_array_equal(f["labels"], d.target)
        split = f["split"]
    s = D.load_digits(dtype=np.uint8)
    np.testing.assert_array_equal(s["val"].x[:, 0], d.images[split == 1])
    np.testing.assert_array_equal(s["test"].y, d.target[split == 2])


def test_digits_licence_ships_with_the_data():
    text = (D.datasets.DIGITS_FILE.parent / "DIGITS_LICENSE.txt").read_text()
    assert "CC BY 4.0" in text and "Alpaydin" in text
