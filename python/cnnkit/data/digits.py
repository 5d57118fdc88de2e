"""The UCI handwritten digits bundled with cnnkit (digits.npz next to this module)."""
import pathlib

import numpy as np

from ._common import ArrayDataset, DataFormatError
from ._files import _scale

DIGITS_FILE = pathlib.Path(__file__).resolve().parent / "digits.npz"


def load_digits(dtype=np.float32):
    """The UCI handwritten digits bundled with cnnkit: 1,797 grey 8x8 images of the digits 0-9.

    Source: Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning Repository,
    CC BY 4.0 (the copy scikit-learn ships as ``load_digits``; see DIGITS_LICENSE.txt). Pixel values 0..16
    are scaled to [0, 1] (divided by 16) unless ``dtype=numpy.uint8``.

    Returns ``{"train", "val", "test"}`` -> ArrayDataset with x (N, 1, 8, 8) and y (N,) int64. The split is
    fixed and stored in the file: 1,197 / 300 / 300 images, chosen by a permutation of numpy's PCG64 seeded
    with 0 (tools/make_digits.py); within each split the images keep the original order.
    """
    with np.load(DIGITS_FILE, allow_pickle=False) as f:
        images, labels, split = f["images"], f["labels"], f["split"]
    if images.shape != (1797, 8, 8) or labels.shape != (1797,) or split.shape != (1797,):
        raise DataFormatError(DIGITS_FILE, "unexpected array shapes (reinstall cnnkit)")
    x = images.reshape(-1, 1, 8, 8)
    out = {}
    for code, name in enumerate(("train", "val", "test")):
        sel = split == code
        out[name] = ArrayDataset(_scale("load_digits", x[sel], dtype, 16.0), labels[sel].astype(np.int64),
                                 classes=[str(d) for d in range(10)])
    return out
