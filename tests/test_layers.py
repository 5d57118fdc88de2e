# Every layer against its torch.nn twin (same weights; forward, input gradient and parameter gradients) in
# float64 (1e-10) and float32 (1e-5), and through ck.gradcheck in float64. "Relative" here is normwise per
# tensor: max|ours - torch| <= tol * max|torch|, so entries near zero do not turn rounding into failures.
# Plus the layer-level bad-input block: wrong rank, wrong channels, backward before forward.
import numpy as np
import pytest

import cnnkit as ck

from helpers.torch_compare import close

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)

TOL = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]


def twin(layer, tmod, xs, dtype, train=True, params=None, tfn=None):
    """Run layer and its torch twin on the same inputs and weights; compare y, dx and parameter grads."""
    tol = TOL[dtype]
    xs = [np.ascontiguousarray(x, dtype=dtype) for x in (xs if isinstance(xs, list) else [xs])]
    layer.to(dtype).train(train)
    layer.zero_grad()
    tparams = {}
    if tmod is not None:
        tmod = tmod.to(torch.float64 if dtype == np.float64 else torch.float32).train(train)
        tmod.zero_grad(set_to_none=True)
        with torch.no_grad():
            for n, p in layer.named_parameters():
                getattr(tmod, n).copy_(torch.from_numpy(p.data.copy()))
        tparams = dict(tmod.named_parameters())
    txs = [torch.from_numpy(x.copy()).requires_grad_(True) for x in xs]
    y = layer(*xs)
    ty = tmod(*txs) if tfn is None else tfn(*txs)
    close(y, ty, tol, f"{type(layer).__name__} forward {np.dtype(dtype)}")
    dy = np.random.default_rng(5).standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    ty.backward(torch.from_numpy(dy))
    dxs = list(dx) if isinstance(dx, tuple) else [dx]
    for i, (a, t) in enumerate(zip(dxs, txs)):
        close(a, t.grad, tol, f"{type(layer).__name__} dx[{i}] {np.dtype(dtype)}")
    for n, p in layer.named_parameters() if tmod is not None else ():
        close(p.grad, tparams[n].grad, tol, f"{type(layer).__name__} d{n} {np.dtype(dtype)}")
    return y, tmod


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------- torch twins

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding=2, dilation=2, groups=2)])
def test_conv2d_matches_torch(dtype, kw):
    layer = ck.Conv2d(4, 6, 3, seed=1, bias_init="gaussian(0.1)", **kw)
    twin(layer, torch.nn.Conv2d(4, 6, 3, **kw), rnd(2, 4, 9, 8), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_without_bias_matches_torch(dtype):
    twin(ck.Conv2d(3, 5, (3, 1), stride=(2, 1), bias=False, seed=2), torch.nn.Conv2d(3, 5, (3, 1), stride=(2, 1), bias=False),
         rnd(2, 3, 7, 6), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_matches_torch(dtype):
    twin(ck.MaxPool2d(3, stride=2, padding=1), torch.nn.MaxPool2d(3, stride=2, padding=1), rnd(2, 3, 9, 8), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cip", [True, False])
def test_avgpool2d_matches_torch(dtype, cip):
    twin(ck.AvgPool2d(3, stride=2, padding=1, count_include_pad=cip),
         torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=cip), rnd(2, 3, 9, 8), dtype)
    twin(ck.AvgPool2d((2, 3)), torch.nn.AvgPool2d((2, 3)), rnd(2, 2, 7, 7), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avgpool_matches_torch(dtype):
    twin(ck.GlobalAvgPool2d(), torch.nn.AdaptiveAvgPool2d(1), rnd(3, 4, 5, 6), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_leaky_relu_match_torch(dtype):
    x = rnd(2, 3, 4, 5)
    x[0, 0, 0, :2] = 0.0   # torch's gradient at 0 is 0 for both
    twin(ck.ReLU(), torch.nn.ReLU(), x, dtype)
    twin(ck.LeakyReLU(0.1), torch.nn.LeakyReLU(0.1), x, dtype)
    twin(ck.LeakyReLU(), torch.nn.LeakyReLU(), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_and_flatten_match_torch(dtype):
    twin(ck.Linear(12, 7, seed=3, bias_init="gaussian(0.1)"), torch.nn.Linear(12, 7), rnd(5, 12), dtype)
    twin(ck.Flatten(), torch.nn.Flatten(), rnd(2, 3, 2, 2), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_matches_torch(dtype):
    x = rnd(4, 50)
    twin(ck.Dropout(0.3), torch.nn.Dropout(0.3), x, dtype, train=False)   # eval: identity
    layer = ck.Dropout(0.3)
    twin(layer, None, x, dtype, tfn=lambda t: t * torch.from_numpy(layer.last_mask.astype(dtype)) / (1 - 0.3))
    keep = layer.last_mask.mean()
    assert 0.55 < keep < 0.85   # 200 draws at 0.7


def test_dropout_streams_reproduce_and_differ():
    def run(seed):
        m = ck.Sequential(ck.Dropout(0.5), ck.Dropout(0.5), seed=seed)
        x = np.ones((8, 64), np.float32)
        m(x)
        a = (m[0].last_mask.copy(), m[1].last_mask.copy())
        m(x)
        return a + (m[0].last_mask.copy(),)
    a, b = run(7), run(7)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))          # same seed: the same masks
    assert not np.array_equal(a[0], a[1])                           # two layers: two streams
    assert not np.array_equal(a[0], a[2])                           # next call: a fresh mask
    assert not np.array_equal(a[0], run(8)[0])                      # another seed: another mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,tcls,shape", [(ck.BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 5)),
                                            (ck.BatchNorm1d, torch.nn.BatchNorm1d, (6, 3)),
                                            (ck.BatchNorm1d, torch.nn.BatchNorm1d, (4, 3, 5)),
                                            # one process (no ck.distributed.init()): torch's BatchNorm2d
                                            (ck.SyncBatchNorm, torch.nn.BatchNorm2d, (4, 3, 5, 5))])
def test_batchnorm_matches_torch(dtype, cls, tcls, shape):
    layer = cls(3, momentum=0.2)
    layer._params["weight"].data[:] = [0.5, 1.5, -2.0]
    layer._params["bias"].data[:] = [0.1, -0.3, 0.7]
    tol = TOL[dtype]
    x = rnd(*shape) * 3 + 1
    _, tmod = twin(layer, tcls(3, momentum=0.2), x, dtype, train=True)
    twin(layer, tmod, rnd(*shape, seed=1) * 2 - 1, dtype, train=True)      # second step moves the stats again
    for b in ("running_mean", "running_var"):
        close(layer._buffers[b], getattr(tmod, b), tol, b)
    assert int(layer._buffers["num_batches_tracked"]) == int(tmod.num_batches_tracked) == 2
    twin(layer, tmod, rnd(*shape, seed=2), dtype, train=False)             # eval: running statistics


def test_batchnorm_cumulative_momentum_matches_torch():
    layer, tmod = ck.BatchNorm2d(2, momentum=None), torch.nn.BatchNorm2d(2, momentum=None).double()
    for s in range(3):
        twin(layer, tmod, rnd(3, 2, 4, 4, seed=s) + s, np.float64)
    close(layer._buffers["running_mean"], tmod.running_mean, 1e-10, "running_mean")
    close(layer._buffers["running_var"], tmod.running_var, 1e-10, "running_var")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [5, 4, 1])
def test_local_response_norm_matches_torch(dtype, size):
    twin(ck.LocalResponseNorm(size, alpha=0.5, beta=0.75, k=2.0), torch.nn.LocalResponseNorm(size, 0.5, 0.75, 2.0),
         rnd(2, 7, 3, 4) * 2, dtype)
    twin(ck.LocalResponseNorm(size), torch.nn.LocalResponseNorm(size), rnd(2, 7, 3, 4), dtype)   # AlexNet defaults


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_locally_connected_matches_unshared_torch_conv(dtype, stride, padding):
    layer = ck.LocallyConnected2d(3, 4, 3, (7, 6), stride=stride, padding=padding, seed=4, bias_init="gaussian(0.1)")
    P, Q = layer.P, layer.Q
    tw = torch.from_numpy(layer.weight.data.astype(dtype)).requires_grad_(True)
    tb = torch.from_numpy(layer.bias.data.astype(dtype)).requires_grad_(True)

    def ref(x):   # unfold, then a separate filter bank per output position
        cols = F.unfold(x, 3, padding=padding, stride=stride)                  # (N, C*R*S, P*Q)
        w = tw.reshape(P * Q, 4, -1)                                            # (PQ, K, CRS)
        y = torch.einsum("ncl,lkc->nkl", cols, w).reshape(x.shape[0], 4, P, Q)
        return y + tb

    tw.grad = tb.grad = None
    twin(layer, None, rnd(2, 3, 7, 6), dtype, tfn=ref)
    close(layer.weight.grad, tw.grad, TOL[dtype], "dweight")
    close(layer.bias.grad, tb.grad, TOL[dtype], "dbias")


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropconnect_matches_linear_on_masked_weights(dtype):
    layer = ck.DropConnect(10, 6, p=0.4, seed=5)
    layer.manual_seed(3)
    tw = torch.from_numpy(layer.weight.data.astype(dtype)).requires_grad_(True)
    tb = torch.from_numpy(layer.bias.data.astype(dtype)).requires_grad_(True)
    tfn = lambda t: F.linear(t, tw * torch.from_numpy(layer.last_mask.astype(dtype)) / (1 - 0.4), tb)  # noqa: E731
    twin(layer, None, rnd(5, 10), dtype, tfn=tfn)
    close(layer.weight.grad, tw.grad, TOL[dtype], "dweight")
    close(layer.bias.grad, tb.grad, TOL[dtype], "dbias")
    assert 0 < layer.last_mask.sum() < layer.last_mask.size
    tw.grad = tb.grad = None
    twin(layer, None, rnd(5, 10), dtype, train=False, tfn=lambda t: F.linear(t, tw, tb))   # eval: the mean weights
    close(layer.weight.grad, tw.grad, TOL[dtype], "dweight eval")


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_and_concat_match_torch(dtype):
    a, b, c = rnd(2, 3, 4, 4, seed=1), rnd(2, 3, 4, 4, seed=2), rnd(2, 5, 4, 4, seed=3)
    twin(ck.Add(), None, [a, b, a], dtype, tfn=lambda x, y, z: x + y + z)
    twin(ck.Concat(), None, [a, c, b], dtype, tfn=lambda x, y, z: torch.cat([x, y, z], 1))
    twin(ck.Concat(axis=3), None, [a, b], dtype, tfn=lambda x, y: torch.cat([x, y], 3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw,shape", [(dict(kernel_size=2, output_size=(5, 4)), (2, 3, 9, 8)),
                                      (dict(kernel_size=3, output_ratio=(0.5, 0.6)), (2, 2, 10, 11))])
def test_fractional_maxpool_matches_torch(dtype, kw, shape):
    layer = ck.FractionalMaxPool2d(**kw)
    layer.manual_seed(11)

    def tfn(t):
        return F.fractional_max_pool2d(t, _random_samples=torch.from_numpy(layer.last_samples), **kw)

    twin(layer, None, rnd(*shape), dtype, tfn=tfn)
    s1 = layer.last_samples.copy()
    layer(rnd(*shape).astype(dtype))
    assert not np.array_equal(s1, layer.last_samples)      # a fresh draw per training call
    layer.eval()
    y1, y2 = layer(rnd(*shape).astype(dtype)), layer(rnd(*shape).astype(dtype))
    assert np.array_equal(y1, y2)                          # eval: one fixed draw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_matches_torchvision_semantics(dtype, mode):
    layer = ck.StochasticDepth(0.5, mode)
    layer.manual_seed(1)

    def tfn(t):   # torchvision.ops.stochastic_depth with our draw of the Bernoulli noise
        return t * torch.from_numpy(layer.last_noise)

    twin(layer, None, rnd(16, 3, 2, 2), dtype, tfn=tfn)
    noise = layer.last_noise
    assert noise.shape == ((16, 1, 1, 1) if mode == "row" else (1, 1, 1, 1))
    assert set(np.unique(noise)) <= {0.0, 2.0}
    if mode == "row":
        assert 0 < (noise > 0).sum() < 16
    twin(layer, None, rnd(4, 3), dtype, train=False, tfn=lambda t: t * 1)   # eval: identity
    y = ck.StochasticDepth(1.0)(np.ones((3, 2), dtype))
    assert np.array_equal(y, np.zeros((3, 2), dtype))                       # p = 1: dropped, not divided by 0


# ---------------------------------------------------------------- gradcheck every layer in float64

def _gc_cases():
    return [
        ("conv", lambda: ck.Conv2d(3, 4, 3, stride=2, padding=1, seed=0), (2, 3, 7, 6)),
        ("conv-groups", lambda: ck.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, seed=0), (2, 4, 5, 5)),
        ("maxpool", lambda: ck.MaxPool2d(2), (2, 3, 6, 6)),
        ("avgpool", lambda: ck.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 2, 7, 6)),
        ("gap", lambda: ck.GlobalAvgPool2d(), (2, 3, 4, 5)),
        ("relu", lambda: ck.ReLU(), (3, 10)),
        ("leaky", lambda: ck.LeakyReLU(0.2), (3, 10)),
        ("linear", lambda: ck.Linear(8, 5, seed=0), (4, 8)),
        ("flatten", lambda: ck.Flatten(), (2, 3, 2, 2)),
        ("dropout", lambda: ck.Dropout(0.4), (4, 12)),
        ("bn1d", lambda: ck.BatchNorm1d(5), (6, 5)),
        ("bn2d", lambda: ck.BatchNorm2d(3), (3, 3, 3, 3)),
        ("syncbn", lambda: ck.SyncBatchNorm(3), (3, 3, 3, 3)),
        ("lrn", lambda: ck.LocalResponseNorm(3, alpha=0.5, k=1.5), (2, 5, 3, 3)),
        ("local", lambda: ck.LocallyConnected2d(2, 3, 3, (5, 5), stride=2, padding=1, seed=0), (2, 2, 5, 5)),
        ("dropconnect", lambda: ck.DropConnect(6, 4, p=0.5, seed=0), (3, 6)),
        ("fmp", lambda: ck.FractionalMaxPool2d(2, output_size=(4, 3)), (2, 2, 7, 6)),
        ("sd", lambda: ck.StochasticDepth(0.3), (6, 2, 2, 2)),
    ]


@pytest.mark.parametrize("case", _gc_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("train", [True, False])
def test_every_layer_passes_gradcheck(case, train):
    _, make, shape = case
    layer = make().train(train)
    layer.manual_seed(3)
    report = ck.gradcheck(layer, rnd(*shape, seed=9), max_coords=16)
    assert report.ok and report.kinks == 0      # random inputs sit on no kink: nothing is excused
    assert report.rows[0]["name"] == "input" and report.rows[0]["checked"] > 0
    assert sum(r["checked"] for r in report.rows) == sum(min(16, p.size) for p in layer.parameters()) + min(16, int(np.prod(shape)))


def test_multi_input_layers_pass_gradcheck():
    a, b = rnd(2, 3, 2, 2, seed=1), rnd(2, 4, 2, 2, seed=2)
    assert ck.gradcheck(ck.Concat(), (a, b)).ok
    assert ck.gradcheck(ck.Add(), (a, rnd(2, 3, 2, 2, seed=3))).ok


# ---------------------------------------------------------------- bad inputs, one layer at a time

def test_wrong_rank_and_channels_raise():
    with pytest.raises(ValueError, match=r"Conv2d: input must be 4-D \(N, C, H, W\), got shape \(3, 8, 8\)"):
        ck.Conv2d(3, 4, 3)(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: expects 3 input channels, got shape \(1, 2, 8, 8\)"):
        ck.Conv2d(3, 4, 3)(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"Linear: input must be 2-D"):
        ck.Linear(4, 2)(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="BatchNorm2d: input must be 4-D"):
        ck.BatchNorm2d(3)(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ck.BatchNorm1d(3)(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="Add: inputs must have one shape"):
        ck.Add()(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="does not match the parameters' float32"):
        ck.Linear(4, 2)(np.zeros((2, 4), np.float64))
    with pytest.raises(ValueError, match=r"Dropout: p \(the drop probability\) must be in \[0, 1\)"):
        ck.Dropout(1.0)


@pytest.mark.parametrize("make, exc, message", [
    (lambda: ck.Conv2d(1, 4, 0), ValueError, r"Conv2d: kernel_size must be >= 1, got 0"),
    (lambda: ck.Conv2d(1, 4, 3, stride=0), ValueError, r"Conv2d: stride must be >= 1, got 0"),
    (lambda: ck.Conv2d(1, 4, 3, stride=(1, 0)), ValueError, r"Conv2d: stride must be >= 1, got \(1, 0\)"),
    (lambda: ck.Conv2d(1, 4, 3, padding=-1), ValueError, r"Conv2d: padding must be >= 0, got -1"),
    (lambda: ck.Conv2d(1, 4, 3, dilation=0), ValueError, r"Conv2d: dilation must be >= 1, got 0"),
    (lambda: ck.Conv2d(1, 4, 3, padding=1.5), TypeError, r"Conv2d: padding must be an int, got float"),
    (lambda: ck.Conv2d(1, 4, (3, 3, 3)), ValueError, r"Conv2d: kernel_size must be an int or a pair \(h, w\)"),
    (lambda: ck.Conv2d(1, 4, 3, padding="full"), ValueError,
     r"Conv2d: padding must be an int, a pair \(h, w\), 'valid' or 'same', got 'full'"),
    (lambda: ck.Conv2d(1, 4, 3, stride=2, padding="same"), ValueError,
     r"Conv2d: padding='same' needs stride 1 \(as in torch\), got stride \(2, 2\)"),
    (lambda: ck.MaxPool2d(0), ValueError, r"MaxPool2d: kernel_size must be >= 1, got 0"),
    (lambda: ck.MaxPool2d(2, stride=0), ValueError, r"MaxPool2d: stride must be >= 1, got 0"),
    (lambda: ck.MaxPool2d(2, padding=-1), ValueError, r"MaxPool2d: padding must be >= 0, got -1"),
    (lambda: ck.MaxPool2d(2, dilation=0), ValueError, r"MaxPool2d: dilation must be >= 1, got 0"),
    (lambda: ck.AvgPool2d(0), ValueError, r"AvgPool2d: kernel_size must be >= 1, got 0"),
    (lambda: ck.AvgPool2d(2, stride="2"), TypeError, r"AvgPool2d: stride must be an int, got str"),
    (lambda: ck.FractionalMaxPool2d(0, output_size=3), ValueError, r"FractionalMaxPool2d: kernel_size must be >= 1"),
    (lambda: ck.FractionalMaxPool2d(2, output_size=0), ValueError, r"FractionalMaxPool2d: output_size must be >= 1"),
    (lambda: ck.LocallyConnected2d(1, 2, 3, in_size=8, stride=0), ValueError,
     r"LocallyConnected2d: stride must be >= 1, got 0"),
    (lambda: ck.zoo.layers.AdaptiveAvgPool2d(0), ValueError, r"AdaptiveAvgPool2d: output_size must be >= 1, got 0"),
])
def test_bad_layer_arguments_raise_at_construction_naming_the_argument(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_conv_padding_same_and_valid_as_torch():
    torch = pytest.importorskip("torch")
    x = rnd(2, 3, 7, 9, seed=4)
    for kernel, dilation in [(3, 1), ((3, 5), 1), (3, 2), ((1, 3), (3, 2)), (2, 2)]:
        layer = ck.Conv2d(3, 4, kernel, padding="same", dilation=dilation, seed=0).to(np.float64)
        ref = torch.nn.Conv2d(3, 4, kernel, padding="same", dilation=dilation, dtype=torch.float64)
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(layer.weight.data))
            ref.bias.copy_(torch.from_numpy(layer.bias.data))
        y = layer(x)
        assert y.shape == (2, 4, 7, 9)
        np.testing.assert_allclose(y, ref(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-12)
    valid = ck.Conv2d(3, 4, 3, padding="valid")
    assert valid.padding == (0, 0) and valid(x.astype(np.float32)).shape == (2, 4, 5, 7)
    # the resolved padding is what is saved, so a reloaded layer needs no string
    assert ck.Conv2d(3, 4, 5, padding="same").config()["padding"] == 2


@pytest.mark.parametrize("bad", [[[1.0]], 3.0, None, "x"], ids=["list", "float", "None", "str"])
def test_non_array_input_is_a_type_error_naming_the_layer(bad):
    with pytest.raises(TypeError, match=r"Conv2d: input must be a numpy array \(or a CuPy array on a GPU\), got "):
        ck.Conv2d(3, 4, 3)(bad)
    with pytest.raises(TypeError, match=r"Sequential: input must be a numpy array"):
        ck.Sequential(ck.ReLU())(bad)


@pytest.mark.parametrize("layer", [ck.Conv2d(3, 4, 3), ck.ReLU(), ck.MaxPool2d(2), ck.Linear(3, 2), ck.BatchNorm2d(3),
                                   ck.Dropout(0.5), ck.LocalResponseNorm(3), ck.Flatten()], ids=lambda l: type(l).__name__)
def test_backward_before_forward_raises(layer):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((2, 4, 4, 4), np.float32))


def test_backward_twice_raises():
    layer = ck.ReLU()
    layer(np.ones((2, 2)))
    layer.backward(np.ones((2, 2)))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 2)))


def test_parameter_grads_accumulate_and_follow_rebinding():
    layer = ck.Linear(4, 3, seed=0).to(np.float64)
    x, dy = rnd(2, 4), rnd(2, 3, seed=1)
    layer(x)
    layer.backward(dy)
    g1 = layer.weight.grad.copy()
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * g1, rtol=1e-12)
    np.testing.assert_allclose(g1, dy.T @ x, rtol=1e-12)
    fb = ck.FlatBuffer(layer.parameters())          # an optimizer rebinds data and grad to flat views
    fb.zero_grad()
    fb.data[:] = 0.5
    y = layer(x)
    np.testing.assert_allclose(y, x @ np.full((4, 3), 0.5) + 0.5, rtol=1e-12)
    layer.backward(dy)
    np.testing.assert_allclose(fb.grad[:12].reshape(3, 4), dy.T @ x, rtol=1e-12)


def test_initialisers_are_seeded_and_scaled():
    a, b = ck.Conv2d(16, 32, 3, seed=1), ck.Conv2d(16, 32, 3, seed=1)
    assert np.array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, ck.Conv2d(16, 32, 3, seed=2).weight.data)
    assert np.all(a.bias.data == 0)
    big = ck.Linear(1000, 500, seed=0)
    assert abs(big.weight.data.std() - np.sqrt(2 / 1000)) < 0.02 * np.sqrt(2 / 1000)        # He
    xav = ck.Linear(1000, 500, weight_init="xavier", seed=0).weight.data
    lim = np.sqrt(6 / 1500)
    assert xav.max() <= lim and xav.min() >= -lim and abs(xav.std() - lim / np.sqrt(3)) < 0.02 * lim
    small = ck.Linear(1000, 500, weight_init="gaussian(0.001)", seed=0).weight.data
    assert abs(small.std() - 0.001) < 2e-5
    assert abs(ck.Linear(1000, 500, weight_init="small", seed=0).weight.data.std() - 0.01) < 2e-4
    ck.manual_seed(5)
    c = ck.Linear(4, 4).weight.data.copy()
    ck.manual_seed(5)
    assert np.array_equal(c, ck.Linear(4, 4).weight.data)
    with pytest.raises(ValueError, match="unknown initialiser 'bogus'"):
        ck.Linear(2, 2, weight_init="bogus")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_without_affine_or_running_stats_matches_torch(dtype, train):
    x = rnd(5, 3, 4, 4) * 2 + 0.5
    twin(ck.BatchNorm2d(3, affine=False), torch.nn.BatchNorm2d(3, affine=False), x, dtype, train=train)
    layer = ck.BatchNorm2d(3, track_running_stats=False, eps=1e-3)
    assert [n for n, _ in layer.named_buffers()] == []
    twin(layer, torch.nn.BatchNorm2d(3, track_running_stats=False, eps=1e-3), x, dtype, train=train)   # batch stats in eval too
