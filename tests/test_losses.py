# ck.losses: softmax cross-entropy against F.cross_entropy (with and without label smoothing), its
# stability on huge scores, the CS231n SVM loss against the lecture's naive double loop (plus a numeric
# gradient), and mse against F.mse_loss. Each returns (loss, dscores).
import numpy as np
import pytest

import cnnkit as ck

torch = pytest.importorskip("torch")
F = torch.nn.functional
TOL = {np.float64: 1e-10, np.float32: 1e-5}


def torch_loss_and_grad(fn, scores, *args, **kw):
    s = torch.from_numpy(scores.copy()).requires_grad_(True)
    loss = fn(s, *args, **kw)
    loss.backward()
    return loss.item(), s.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_softmax_cross_entropy_matches_torch(dtype, smoothing):
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal((7, 5)) * 3).astype(dtype)
    y = rng.integers(0, 5, size=7)
    loss, d = ck.losses.softmax_cross_entropy(scores, y, label_smoothing=smoothing)
    tl, td = torch_loss_and_grad(F.cross_entropy, scores, torch.from_numpy(y), label_smoothing=smoothing)
    assert abs(loss - tl) <= TOL[dtype] * abs(tl)
    assert d.dtype == dtype and np.abs(d - td).max() <= TOL[dtype] * np.abs(td).max()


def test_softmax_cross_entropy_is_stable():
    scores = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], dtype=np.float32)
    loss, d = ck.losses.softmax_cross_entropy(scores, np.array([0, 2]))
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert abs(loss - np.log(2) / 2) < 1e-6                  # row 0: loss 0; row 1: log 2
    np.testing.assert_allclose(d, [[0, 0, 0], [0, 0.25, -0.25]], atol=1e-7)
    loss, _ = ck.losses.softmax_cross_entropy(np.zeros((3, 10)), np.array([1, 2, 3]))
    assert abs(loss - np.log(10)) < 1e-12                    # uniform scores: log C


def svm_naive(W_scores, y):
    """The lecture's loop version: sum over j != y of max(0, s_j - s_y + 1), averaged over N."""
    N, C = W_scores.shape
    loss = 0.0
    d = np.zeros_like(W_scores)
    for i in range(N):
        for j in range(C):
            if j == y[i]:
                continue
            m = W_scores[i, j] - W_scores[i, y[i]] + 1
            if m > 0:
                loss += m
                d[i, j] += 1
                d[i, y[i]] -= 1
    return loss / N, d / N


def test_svm_loss_matches_cs231n_loop_and_numeric_gradient():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, size=6)
    loss, d = ck.losses.svm_loss(scores, y)
    rl, rd = svm_naive(scores, y)
    assert abs(loss - rl) < 1e-12
    np.testing.assert_allclose(d, rd, atol=1e-15)
    h = 1e-6
    for i, j in [(0, 0), (2, 3), (5, 1)]:
        sp, sm = scores.copy(), scores.copy()
        sp[i, j] += h
        sm[i, j] -= h
        num = (ck.losses.svm_loss(sp, y)[0] - ck.losses.svm_loss(sm, y)[0]) / (2 * h)
        assert abs(num - d[i, j]) < 1e-8
    # hand-worked (CS231n notes): scores [3.2, 5.1, -1.7], y = 0 -> max(0, 2.9) + max(0, -3.9) = 2.9
    loss, d = ck.losses.svm_loss(np.array([[3.2, 5.1, -1.7]]), np.array([0]))
    assert abs(loss - 2.9) < 1e-12 and d.tolist() == [[-1.0, 1.0, 0.0]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse_matches_torch(dtype):
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal((4, 3)).astype(dtype)
    loss, d = ck.losses.mse(pred, target)
    tl, td = torch_loss_and_grad(F.mse_loss, pred, torch.from_numpy(target))
    assert abs(loss - tl) <= TOL[dtype] * tl and np.abs(d - td).max() <= TOL[dtype] * np.abs(td).max()


def test_loss_bad_inputs():
    s = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: scores must be 2-D"):
        ck.losses.softmax_cross_entropy(np.zeros(4), np.array([1]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\), got range \[0, 4\]"):
        ck.losses.svm_loss(s, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="one label per row"):
        ck.losses.svm_loss(s, np.array([0, 1]))
    with pytest.raises(TypeError, match="integer class labels"):
        ck.losses.softmax_cross_entropy(s, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="mse: target must have the shape of pred"):
        ck.losses.mse(s, np.zeros((4, 3)))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.float16, np.complex128])
def test_predictions_must_be_float32_or_float64(dtype):
    pred = np.array([[1, 2], [3, 4]]).astype(dtype)
    with pytest.raises(TypeError, match=rf"mse: pred must be float32 or float64, got {np.dtype(dtype)}"):
        ck.losses.mse(pred, np.zeros((2, 2)))
    with pytest.raises(TypeError, match=rf"softmax_cross_entropy: scores must be float32 or float64, got {np.dtype(dtype)}"):
        ck.losses.softmax_cross_entropy(pred, np.array([0, 1]))
    with pytest.raises(TypeError, match=rf"svm_loss: scores must be float32 or float64, got {np.dtype(dtype)}"):
        ck.losses.svm_loss(pred, np.array([0, 1]))


def test_mse_on_int_predictions_is_refused_and_targets_are_checked():
    # int predictions cast the target to ints (1.75 for a true 1.125) and gave an all-zero gradient
    pred, target = np.array([[1, 2], [3, 4]]), np.array([[0.5, 1.0], [2.0, 2.5]])
    with pytest.raises(TypeError, match="mse: pred must be float32 or float64, got int64"):
        ck.losses.mse(pred, target)
    loss, d = ck.losses.mse(pred.astype(np.float64), target)
    assert loss == 1.125 and np.array_equal(d, [[0.25, 0.5], [0.5, 0.75]])
    assert ck.losses.mse(pred.astype(np.float32), np.array([[1, 2], [3, 5]]))[0] == 0.25   # int targets are values
    with pytest.raises(TypeError, match=r"mse: target must hold real numbers \(bool, int or float\), got complex128"):
        ck.losses.mse(pred.astype(np.float64), target.astype(np.complex128))
    with pytest.raises(ValueError, match=r"mse: target must have the shape of pred \(2, 2\), got \(1, 2\)"):
        ck.losses.mse(pred.astype(np.float64), target[:1])       # would broadcast
    with pytest.raises(TypeError, match=r"mse: pred and target must be arrays, got ndarray, list"):
        ck.losses.mse(pred.astype(np.float64), target.tolist())
