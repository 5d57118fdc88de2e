"""Preprocessing as in CS231n ("Data preprocessing", lecture 6 notes): fitted on the training split, applied to
val and test, saved with the model so prediction uses the same transform.

Statistics are computed in float64 and results are returned in the input's dtype. The covariance is
X^T X / N over centred, flattened images (N, D = C*H*W), as in the notes. ``state_dict()`` gives
``{"kind", "params" (JSON-able), "arrays" (name -> numpy array)}`` and ``load_preprocessor(state)`` rebuilds
the object: a checkpoint stores the arrays beside the tensors and the rest in its JSON.
"""
import numpy as np

from ._common import check_float, check_images, check_int

__all__ = ["Preprocessor", "MeanImage", "ChannelMean", "ChannelStandardize", "PCAWhiten", "ZCAWhiten",
           "load_preprocessor"]


class Preprocessor:
    """Base: ``fit(x_train)``, then ``transform(x)`` (or call it); ``fit_transform``; ``state_dict``."""

    kind = None
    _arrays = ()

    def __init__(self):
        self.shape = None  # (C, H, W) seen by fit

    def _name(self):
        return type(self).__name__

    def fit(self, x):
        check_images(f"{self._name()}.fit", "x", x)
        if x.shape[0] < 1:
            raise ValueError(f"{self._name()}.fit: x must hold at least one image, got shape {tuple(x.shape)}")
        self.shape = tuple(int(s) for s in x.shape[1:])
        self._fit(x.astype(np.float64))
        return self

    def _check_input(self, op, x):
        """x must be images of the shape seen at fit time, and fit must have happened."""
        if self.shape is None:
            raise ValueError(f"{op}: call fit(x_train) first (or load a state_dict)")
        check_images(op, "x", x)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"{op}: x must be (N, {', '.join(map(str, self.shape))}) as at fit time, "
                             f"got {tuple(x.shape)}")

    def transform(self, x):
        op = f"{self._name()}.transform"
        self._check_input(op, x)
        return np.ascontiguousarray(self._transform(x.astype(np.float64)), dtype=x.dtype)

    __call__ = transform

    def fit_transform(self, x):
        return self.fit(x).transform(x)

    def _params(self):
        return {}

    def state_dict(self):
        if self.shape is None:
            raise ValueError(f"{self._name()}.state_dict: not fitted")
        return {"kind": self.kind, "params": {"shape": list(self.shape), **self._params()},
                "arrays": {k: np.array(getattr(self, k)) for k in self._arrays}}

    def __repr__(self):
        return f"{self._name()}({', '.join(f'{k}={v!r}' for k, v in self._params().items())})"


class MeanImage(Preprocessor):
    """Subtract the mean image (C, H, W) of the training set (AlexNet's mean-image subtraction)."""

    kind = "mean_image"
    _arrays = ("mean",)

    def _fit(self, x):
        self.mean = x.mean(axis=0)

    def _transform(self, x):
        return x - self.mean


class ChannelMean(Preprocessor):
    """Subtract one mean per channel (VGG-style)."""

    kind = "channel_mean"
    _arrays = ("mean",)

    def _fit(self, x):
        self.mean = x.mean(axis=(0, 2, 3))

    def _transform(self, x):
        return x - self.mean[None, :, None, None]


class ChannelStandardize(Preprocessor):
    """Subtract the per-channel mean and divide by the per-channel standard deviation (population std)."""

    kind = "channel_standardize"
    _arrays = ("mean", "std")

    def _fit(self, x):
        self.mean = x.mean(axis=(0, 2, 3))
        self.std = x.std(axis=(0, 2, 3))
        if np.any(self.std == 0):
            raise ValueError(f"ChannelStandardize.fit: channel(s) {np.flatnonzero(self.std == 0).tolist()} are "
                             f"constant (std 0); use ChannelMean")

    def _transform(self, x):
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]


class _Whiten(Preprocessor):
    _arrays = ("mean", "eigvec", "eigval")

    def __init__(self, epsilon=1e-5):
        super().__init__()
        self.epsilon = check_float(self._name(), "epsilon", epsilon, 0.0)

    def _fit(self, x):
        X = x.reshape(x.shape[0], -1)
        self.mean = X.mean(axis=0)
        Xc = X - self.mean
        cov = Xc.T @ Xc / X.shape[0]
        val, vec = np.linalg.eigh(cov)
        order = np.argsort(val)[::-1]  # largest variance first
        self.eigval = np.clip(val[order], 0.0, None)
        self.eigvec = np.ascontiguousarray(vec[:, order])
        if self.epsilon == 0 and np.any(self.eigval[:self._k()] <= 0):
            raise ValueError(f"{self._name()}.fit: the covariance is singular (more dimensions than independent "
                             f"images?); use epsilon > 0")

    def _params(self):
        return {"epsilon": self.epsilon}


class PCAWhiten(_Whiten):
    """PCA whitening: rotate centred data into the eigenbasis and divide by sqrt(eigenvalue + epsilon).

    Returns (N, k) (k = n_components, default all D): no longer an image; use ZCAWhiten to keep the shape.
    """

    kind = "pca_whiten"

    def __init__(self, epsilon=1e-5, n_components=None):
        super().__init__(epsilon)
        self.n_components = None if n_components is None else check_int("PCAWhiten", "n_components",
                                                                           n_components, minimum=1)

    def _k(self):
        return self.eigval.shape[0] if self.n_components is None else self.n_components

    def _fit(self, x):
        D = int(np.prod(x.shape[1:]))
        if self.n_components is not None and self.n_components > D:
            raise ValueError(f"PCAWhiten.fit: n_components must be <= D = {D}, got {self.n_components}")
        super()._fit(x)

    def transform(self, x):
        self._check_input("PCAWhiten.transform", x)
        k = self._k()
        Xc = x.reshape(x.shape[0], -1).astype(np.float64) - self.mean
        out = (Xc @ self.eigvec[:, :k]) / np.sqrt(self.eigval[:k] + self.epsilon)
        return np.ascontiguousarray(out, dtype=x.dtype)

    __call__ = transform

    def _params(self):
        return {"epsilon": self.epsilon, "n_components": self.n_components}


class ZCAWhiten(_Whiten):
    """ZCA whitening: PCA whitening rotated back (U diag(1/sqrt(S + eps)) U^T), so images keep their shape."""

    kind = "zca_whiten"

    def _k(self):
        return self.eigval.shape[0]

    def _fit(self, x):
        super()._fit(x)
        self._w = (self.eigvec / np.sqrt(self.eigval + self.epsilon)) @ self.eigvec.T

    def _transform(self, x):
        Xc = x.reshape(x.shape[0], -1) - self.mean
        return (Xc @ self._w).reshape(x.shape)


_KINDS = {c.kind: c for c in (MeanImage, ChannelMean, ChannelStandardize, PCAWhiten, ZCAWhiten)}


def load_preprocessor(state):
    """Rebuild a fitted preprocessor from its ``state_dict()``."""
    op = "load_preprocessor"
    if not isinstance(state, dict) or not {"kind", "params", "arrays"} <= set(state):
        raise TypeError(f"{op}: state must be a dict with 'kind', 'params' and 'arrays', got {state!r:.80}")
    cls = _KINDS.get(state["kind"])
    if cls is None:
        raise ValueError(f"{op}: unknown kind {state['kind']!r}; known: {sorted(_KINDS)}")
    params = dict(state["params"])
    shape = tuple(int(s) for s in params.pop("shape"))
    obj = cls(**params)
    obj.shape = shape
    for k in cls._arrays:
        if k not in state["arrays"]:
            raise ValueError(f"{op}: {state['kind']} state lacks array {k!r}")
        setattr(obj, k, np.asarray(state["arrays"][k], dtype=np.float64))
    if cls is ZCAWhiten:
        obj._w = (obj.eigvec / np.sqrt(obj.eigval + obj.epsilon)) @ obj.eigvec.T
    return obj
