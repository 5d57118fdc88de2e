"""Regenerate python/cnnkit/data/digits.npz from scikit-learn's copy of the UCI handwritten digits.

Source: E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
Repository (1998), https://doi.org/10.24432/C50P49, licensed CC BY 4.0; the test set as shipped by
scikit-learn (``sklearn.datasets.load_digits``: 1,797 images of 8x8, values 0..16, 10 classes).

The file holds ``images`` (1797, 8, 8) uint8 and ``labels`` (1797,) uint8 in scikit-learn's order, and
``split`` (1797,) uint8 (0 train, 1 val, 2 test): a fixed permutation from numpy's PCG64 seeded with 0
puts its first 1,197 indices in train, the next 300 in val and the last 300 in test. The split is stored,
not recomputed, so it can never drift with a numpy release. Usage (scikit-learn needed only here):

    python tools/make_digits.py            # writes python/cnnkit/data/digits.npz
"""
import hashlib
import pathlib
import sys

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "python" / "cnnkit" / "data" / "digits.npz"
N_TRAIN, N_VAL, N_TEST = 1197, 300, 300


def build():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.uint8)
    if not np.array_equal(images, d.images) or images.shape != (1797, 8, 8):
        raise SystemExit("unexpected load_digits content")
    labels = d.target.astype(np.uint8)
    perm = np.random.Generator(np.random.PCG64(0)).permutation(len(labels))
    split = np.empty(len(labels), np.uint8)
    split[perm[:N_TRAIN]] = 0
    split[perm[N_TRAIN:N_TRAIN + N_VAL]] = 1
    split[perm[N_TRAIN + N_VAL:]] = 2
    return images, labels, split


def main(out=OUT):
    images, labels, split = build()
    np.savez_compressed(out, images=images, labels=labels, split=split)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes() + split.tobytes()).hexdigest()
    print(f"wrote {out} ({out.stat().st_size} bytes); content sha256 {digest}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
