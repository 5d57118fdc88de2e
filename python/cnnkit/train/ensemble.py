"""Ensembles: average the predicted class probabilities of several models (CS231n: 2% more accuracy is
typical), and snapshot ensembles rebuilt from the files a SnapshotSaver wrote."""
import glob
import os

import numpy as np

from ..autograd import as_array, no_grad


def _softmax(s):
    s = np.asarray(s, dtype=np.float64)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Ensemble:
    """Averages softmax probabilities of `models` (each in eval mode while predicting)."""

    def __init__(self, models):
        self.models = list(models)
        if not self.models:
            raise ValueError("Ensemble: models is empty")

    def predict_proba(self, x, batch_size=256):
        total = None
        for m in self.models:
            was = m.training
            m.eval()
            try:
                with no_grad():
                    p = np.concatenate([_softmax(as_array(m(np.ascontiguousarray(x[i:i + batch_size]))))
                                        for i in range(0, len(x), batch_size)])
            finally:
                m.train(was)
            total = p if total is None else total + p
        return total / len(self.models)

    def predict(self, x, batch_size=256):
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def accuracy(self, x, y, batch_size=256):
        return float((self.predict(x, batch_size) == np.asarray(y)).mean())

    def __len__(self):
        return len(self.models)


class SnapshotEnsemble(Ensemble):
    @classmethod
    def from_dir(cls, folder, last=None):
        """Load every snapshot-*.safetensors in `folder` (the last `last` of them, if given)."""
        from ..serialize import load
        paths = sorted(glob.glob(os.path.join(os.fspath(folder), "snapshot-*.safetensors")))
        if last:
            paths = paths[-int(last):]
        if not paths:
            raise ValueError(f"SnapshotEnsemble.from_dir: no snapshot-*.safetensors files in {folder}")
        return cls([load(p) for p in paths])
