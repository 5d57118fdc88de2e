"""Losses on a batch of scores: each returns (loss, dscores), loss a Python float averaged over the batch,
dscores its gradient (same shape and dtype as the scores). On a GPU (CuPy scores) the loss is a 0-d CuPy
array instead, so that nothing is read back to the host inside a training step; labels given as a host
array are range-checked on the host before their one copy to the device (labels already on the device are
checked there, which reads their range back: one host read).

softmax_cross_entropy matches torch.nn.functional.cross_entropy (mean, optional label smoothing);
svm_loss is CS231n's multiclass hinge (not divided by C, unlike F.multi_margin_loss); mse matches
F.mse_loss (mean over every element). Regularisation terms belong to the optimizer, not here.

The loss classes of ck.nn (CrossEntropyLoss, ...) are re-exported here: they return recorded ck.Tensor values
for models written as ck.Module, and are Trainer losses too.
"""
import numpy as np

from ._xp import array_module, is_device_array
from .data._common import check_float


def _float_scores(op, name, a):
    # the kernels' rule: integer scores would make the loss and its gradient integer arithmetic
    if np.dtype(a.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype}")


def _scores_labels(op, scores, y):
    xp = array_module(scores)
    if not hasattr(scores, "ndim") or scores.ndim != 2:
        raise ValueError(f"{op}: scores must be 2-D (N, classes), got shape {getattr(scores, 'shape', None)}")
    _float_scores(op, "scores", scores)
    if not is_device_array(y):
        y = np.asarray(y)   # checked on the host, then copied over once
    if y.ndim != 1 or y.shape[0] != scores.shape[0]:
        raise ValueError(f"{op}: y must be 1-D with one label per row of scores ({scores.shape[0]}), "
                         f"got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{op}: y must hold integer class labels, got dtype {y.dtype}")
    if y.size:
        lo, hi = (int(v) for v in (y.min(), y.max()))
        if lo < 0 or hi >= scores.shape[1]:
            raise ValueError(f"{op}: labels must be in [0, {scores.shape[1]}), got range [{lo}, {hi}]")
    return xp, xp.asarray(y)


def _value(loss):
    """The loss as a float on the CPU; a 0-d array (no host read) on a GPU."""
    return loss if is_device_array(loss) else float(loss)


def softmax_cross_entropy(scores, y, label_smoothing=0.0):
    """Mean cross-entropy of softmax(scores) against labels y, as F.cross_entropy(scores, y, label_smoothing=...).

    Stable: the row maximum is subtracted before exponentiating, and log-softmax is formed directly.
    With smoothing eps the target is (1 - eps) * one_hot(y) + eps / C.
    scores (N, C), y (N,) int -> (loss, dscores (N, C)), dscores = (softmax - target) / N.
    """
    op = "softmax_cross_entropy"
    xp, y = _scores_labels(op, scores, y)
    eps = check_float(op, "label_smoothing", label_smoothing, lo=0, hi=1)
    N, C = scores.shape
    shifted = scores - scores.max(axis=1, keepdims=True)
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    rows = xp.arange(N)
    nll = -logp[rows, y]
    loss = nll.mean() if eps == 0.0 else ((1.0 - eps) * nll - eps * logp.mean(axis=1)).mean()
    d = xp.exp(logp)
    if eps == 0.0:
        d[rows, y] -= 1
    else:
        d -= scores.dtype.type(eps / C)
        d[rows, y] -= scores.dtype.type(1.0 - eps)
    d /= scores.dtype.type(N)
    return _value(loss), d


def svm_loss(scores, y, margin=1.0):
    """CS231n multiclass SVM: mean over the batch of sum_{j != y} max(0, s_j - s_y + margin).

    scores (N, C), y (N,) int -> (loss, dscores). At a margin of exactly 0 the gradient taken is 0.
    """
    op = "svm_loss"
    xp, y = _scores_labels(op, scores, y)
    margin = check_float(op, "margin", margin)
    N = scores.shape[0]
    rows = xp.arange(N)
    margins = xp.maximum(0, scores - scores[rows, y][:, None] + scores.dtype.type(margin))
    margins[rows, y] = 0
    loss = margins.sum() / N
    d = (margins > 0).astype(scores.dtype)
    d[rows, y] = -d.sum(axis=1)
    d /= scores.dtype.type(N)
    return _value(loss), d


def mse(pred, target):
    """Mean squared error over every element, as F.mse_loss: (loss, dpred), dpred = 2 (pred - target) / numel."""
    op = "mse"
    if not hasattr(pred, "shape") or not hasattr(target, "shape"):
        raise TypeError(f"{op}: pred and target must be arrays, got {type(pred).__name__}, {type(target).__name__}")
    _float_scores(op, "pred", pred)
    if np.dtype(target.dtype).kind not in "biuf":
        raise TypeError(f"{op}: target must hold real numbers (bool, int or float), got {target.dtype}")
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"{op}: target must have the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
    diff = pred - target.astype(pred.dtype, copy=False)
    loss = (diff * diff).mean()
    return _value(loss), diff * pred.dtype.type(2.0 / diff.size)


# torch's loss classes (recorded, for ck.Module models) live in ck.nn and are reachable here too
from .nn import (BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, MultiMarginLoss, NLLLoss,  # noqa: E402
                 SmoothL1Loss)

__all__ = ["softmax_cross_entropy", "svm_loss", "mse", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss",
           "SmoothL1Loss", "BCEWithLogitsLoss", "MultiMarginLoss"]
