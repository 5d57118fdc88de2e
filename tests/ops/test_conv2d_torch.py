# conv2d against PyTorch as the outside oracle (the rest of the op's tests: test_conv2d.py).
import numpy as np
import pytest

from cnnkit import ops

from helpers import reference as R

F32, F64 = np.float32, np.float64


def _amax(a):
    return float(np.abs(a).max()) if a.size else 0.0


# ---------------------------------------------------------------- PyTorch as the outside oracle

TORCH_CFGS = [
    dict(N=2, C=3, K=4, H=9, W=7, R=3, S=3, stride=1, padding=1, dilation=1, groups=1),
    dict(N=3, C=4, K=6, H=11, W=8, R=3, S=2, stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2),
    dict(N=1, C=6, K=6, H=10, W=10, R=3, S=3, stride=2, padding=2, dilation=3, groups=6),  # depthwise
    dict(N=2, C=8, K=4, H=5, W=5, R=1, S=1, stride=1, padding=0, dilation=1, groups=1),   # pointwise
    dict(N=2, C=2, K=3, H=13, W=12, R=5, S=4, stride=3, padding=(0, 2), dilation=1, groups=1),
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("cfg", TORCH_CFGS, ids=["3x3", "groups-stride-dil", "depthwise", "1x1", "5x4-stride3"])
def test_conv2d_matches_torch(cfg, dtype, rng):
    torch = pytest.importorskip("torch")
    hp = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    w = rng.standard_normal((cfg["K"], cfg["C"] // cfg["groups"], cfg["R"], cfg["S"])).astype(dtype)
    b = rng.standard_normal(cfg["K"]).astype(dtype)
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **hp)
    dy = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(dy))

    crs, npq = x.shape[1] // cfg["groups"] * cfg["R"] * cfg["S"], dy.shape[0] * dy.shape[2] * dy.shape[3]
    y = ops.conv2d_fwd(x, w, b, **hp)
    R.assert_close(y, ty.detach().numpy(), reduction=crs + 1, scale=_amax(x) * _amax(w) + _amax(b), dtype=dtype)
    R.assert_close(ops.conv2d_bwd_data(dy, w, x.shape, **hp), tx.grad.numpy(),
                   reduction=cfg["K"] // cfg["groups"] * cfg["R"] * cfg["S"], scale=_amax(dy) * _amax(w), dtype=dtype)
    R.assert_close(ops.conv2d_bwd_weight(dy, x, w.shape, **hp), tw.grad.numpy(),
                   reduction=npq, scale=_amax(dy) * _amax(x), dtype=dtype)
    R.assert_close(ops.conv2d_bwd_bias(dy), tb.grad.numpy(), reduction=npq, scale=_amax(dy), dtype=dtype)
