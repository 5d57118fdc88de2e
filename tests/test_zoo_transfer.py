# Weights in and out (torchvision key names, safetensors and .pth, bit-identical round trips, clear errors,
# malicious pickles refused before they run), and transfer learning: freeze / unfreeze (no gradient
# computed for frozen layers, parameters bit-unchanged by a training step, BatchNorm in frozen blocks kept
# in inference mode in train mode), replace_head, features at any stage, per-layer learning rates.
import os
import pickle
import sys

import numpy as np
import pytest

import cnnkit as ck


def small_resnet(seed=0, num_classes=10):
    return ck.zoo.resnet18(num_classes=num_classes, width=8, seed=seed)


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for _, layer in model.named_layers():
        if isinstance(layer, ck.BatchNorm2d):
            layer.running_mean[...] = rng.normal(0, 0.1, layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.running_var.shape)
            layer.num_batches_tracked[...] = 7
            layer.bias.data[...] = rng.normal(0, 0.1, layer.bias.shape)
    return model


def _same(a, b):
    sa, sb = ck.zoo.state_dict(a), ck.zoo.state_dict(b)
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        assert sa[k].tobytes() == sb[k].tobytes(), k


# ---------------------------------------------------------------- import and export

def test_export_import_round_trip_is_bit_identical(tmp_path):
    src = _randomize(small_resnet(seed=1), 2)
    path = tmp_path / "r18.safetensors"
    sd = ck.zoo.export_torch_state_dict(src, path)
    assert "layer1.0.conv1.weight" in sd and "layer2.0.downsample.0.weight" in sd and "fc.bias" in sd
    assert sd["bn1.num_batches_tracked"].shape == () and sd["bn1.num_batches_tracked"].dtype == np.int64
    assert not list(tmp_path.glob(".*.tmp"))              # the atomic write left no temp file
    dst = small_resnet(seed=5)
    ck.zoo.load_torch_state_dict(dst, path)
    _same(src, dst)
    # a dict of arrays, and writing in place keeps an optimizer's flat buffer bound
    dst2 = small_resnet(seed=6)
    opt = ck.optim.SGD(dst2.parameters(), lr=0.1)
    ck.zoo.load_torch_state_dict(dst2, sd)
    _same(src, dst2)
    opt.step()   # would raise if load had rebound p.data


def test_torch_pth_round_trip_and_torch_reads_the_export(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    src = _randomize(ck.zoo.resnet20(seed=3), 4)
    path = tmp_path / "r20.safetensors"
    ck.zoo.export_torch_state_dict(src, path)
    tsd = load_file(str(path))                             # what a PyTorch user gets
    assert tsd["layer1.0.bn1.num_batches_tracked"].dtype == torch.int64
    torch.save(tsd, tmp_path / "r20.pth")                 # ... and saves the PyTorch way
    dst = ck.zoo.resnet20(seed=9)
    ck.zoo.load_torch_state_dict(dst, tmp_path / "r20.pth")
    _same(src, dst)
    dst2 = ck.zoo.resnet20(seed=10)                       # a dict of torch tensors; a {"state_dict": ...} checkpoint
    torch.save({"state_dict": tsd, "epoch": 3}, tmp_path / "ckpt.pt")
    ck.zoo.load_torch_state_dict(dst2, tmp_path / "ckpt.pt")
    _same(src, dst2)


def test_state_dict_of_another_architecture_is_rejected_and_nothing_changes():
    m = small_resnet(seed=0)
    before = {k: v.copy() for k, v in ck.zoo.state_dict(m).items()}
    other = ck.zoo.export_torch_state_dict(ck.zoo.vgg11(hidden=8, seed=0))
    with pytest.raises(ck.zoo.StateDictError, match=r"another architecture.*missing \d+ key\(s\): conv1.weight, "
                                                    r"bn1.weight.*unexpected \d+ key\(s\): features.0.weight") as e:
        ck.zoo.load_torch_state_dict(m, other)
    assert "fc.weight" in e.value.missing and "features.0.weight" in e.value.unexpected
    # resnet34 into resnet18: the extra blocks are unexpected, and the message names them
    r34 = ck.zoo.export_torch_state_dict(ck.zoo.resnet34(num_classes=10, width=8, seed=0))
    with pytest.raises(ValueError, match=r"unexpected \d+ key\(s\): layer1.2.conv1.weight"):
        ck.zoo.load_torch_state_dict(m, r34)
    for k, v in ck.zoo.state_dict(m).items():
        assert np.array_equal(v, before[k]), k


def test_shape_mismatch_lists_expected_and_received():
    m = small_resnet(seed=0, num_classes=10)
    sd = ck.zoo.export_torch_state_dict(small_resnet(seed=1, num_classes=1000))
    before = m["conv1"].weight.data.copy()
    with pytest.raises(ck.zoo.StateDictError, match=r"2 shape mismatch\(es\): fc.weight expected \(10, 64\) got "
                                                    r"\(1000, 64\), fc.bias expected \(10,\) got \(1000,\)") as e:
        ck.zoo.load_torch_state_dict(m, sd)
    assert [n for n, _, _ in e.value.mismatched] == ["fc.weight", "fc.bias"]
    assert np.array_equal(m["conv1"].weight.data, before)      # nothing written
    # strict=False tolerates missing / unexpected keys, never shapes; the usual pattern is load, then replace_head
    with pytest.raises(ValueError, match="shape mismatch"):
        ck.zoo.load_torch_state_dict(m, sd, strict=False)
    m1000 = small_resnet(seed=2, num_classes=1000)
    ck.zoo.load_torch_state_dict(m1000, sd)
    m1000.replace_head(10)
    del sd["fc.weight"], sd["fc.bias"]
    missing, unexpected = ck.zoo.load_torch_state_dict(m, dict(sd, extra=np.zeros(3, np.float32)), strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == ["extra"]
    np.testing.assert_array_equal(m["conv1"].weight.data, m1000["conv1"].weight.data)


def test_bad_arguments(tmp_path):
    m = ck.zoo.lenet5(seed=0)
    with pytest.raises(TypeError, match="path_or_dict must be a path"):
        ck.zoo.load_torch_state_dict(m, 3)
    with pytest.raises(TypeError, match="model must be a ck.Layer"):
        ck.zoo.load_torch_state_dict("lenet", {})
    with pytest.raises(FileNotFoundError):
        ck.zoo.load_torch_state_dict(m, tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        ck.zoo.load_torch_state_dict(m, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="must end in .safetensors"):
        ck.zoo.export_torch_state_dict(m, tmp_path / "m.pth")
    sd = ck.zoo.export_torch_state_dict(m)
    sd["features.0.weight"] = sd["features.0.weight"].astype(np.int32)
    with pytest.raises(TypeError, match="must be floating point"):
        ck.zoo.load_torch_state_dict(m, sd)


class _Evil:
    """Unpickling this runs os.mkdir(sentinel): the classic code-execution pickle."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.mkdir, (self.sentinel,))


def test_malicious_pth_is_refused_and_its_code_never_runs(tmp_path):
    torch = pytest.importorskip("torch")
    m = ck.zoo.lenet5(seed=0)
    sentinel = str(tmp_path / "pwned")
    good = {k: torch.from_numpy(v) for k, v in ck.zoo.export_torch_state_dict(m).items()}
    torch.save(dict(good, **{"classifier.4.bias": _Evil(sentinel)}), tmp_path / "evil.pth")    # zip format
    (tmp_path / "evil_legacy.pth").write_bytes(pickle.dumps({"w": _Evil(sentinel)}, protocol=2))   # bare pickle
    for name in ("evil.pth", "evil_legacy.pth"):
        with pytest.raises(ValueError, match="refused to load"):
            ck.zoo.load_torch_state_dict(m, tmp_path / name)
        assert not os.path.exists(sentinel)
    # the payload is real: an unrestricted unpickler runs it
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert os.path.isdir(sentinel)


def test_pth_without_torch_is_refused_with_a_hint(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(pickle.dumps({"w": 1}, protocol=2))
    monkeypatch.setitem(sys.modules, "torch", None)        # import torch now fails
    with pytest.raises(ImportError, match="needs torch.*convert the file to .safetensors"):
        ck.zoo.load_torch_state_dict(ck.zoo.lenet5(), tmp_path / "w.pth")
    # safetensors needs no torch
    path = tmp_path / "w.safetensors"
    src = ck.zoo.lenet5(seed=1)
    ck.zoo.export_torch_state_dict(src, path)
    dst = ck.zoo.lenet5(seed=2)
    ck.zoo.load_torch_state_dict(dst, path)
    _same(src, dst)


# ---------------------------------------------------------------- freezing

def _spy(monkeypatch, name):
    calls = []
    real = getattr(ck.ops, name)

    def spy(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(ck.ops, name, spy)
    return calls


def _batch(n=4, c=3, hw=16, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c, hw, hw)).astype(np.float32), rng.integers(0, classes, n)


def test_freeze_up_to_computes_no_gradient_below_and_a_step_leaves_frozen_bits_unchanged(monkeypatch):
    m = ck.zoo.resnet20(seed=0)
    m.freeze(up_to="layer2")
    frozen = {n: p.data.copy() for n, p in m.named_parameters() if not n.startswith(("layer3", "fc"))}
    assert all(not p.requires_grad for n, p in m.named_parameters() if n in frozen)
    assert all(p.requires_grad for n, p in m.named_parameters() if n not in frozen)
    # the optimizer sees every parameter, with momentum and weight decay: frozen ones must still not move
    opt = ck.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    wcalls, dcalls = _spy(monkeypatch, "conv2d_bwd_weight"), _spy(monkeypatch, "conv2d_bwd_data")
    x, y = _batch()
    m.train()
    for _ in range(2):
        opt.zero_grad()
        loss, ds = ck.losses.softmax_cross_entropy(m(x), y)
        m.backward(ds)
        opt.step()
    # layer3 has 6 convolutions: 6 weight gradients per step; data gradients for 5 of them (layer3.0.conv1's
    # input comes from frozen layer2, so nothing needs it); nothing at all below layer3
    assert len(wcalls) == 2 * 6 and len(dcalls) == 2 * 5
    assert all(s[1] == 64 for s in wcalls)                # every weight gradient has layer3's 64 channels
    for n, p in m.named_parameters():
        if n in frozen:
            assert p.data.tobytes() == frozen[n].tobytes(), n
            assert not p.grad.any(), n
        else:
            assert p.grad.any(), n
    assert not np.array_equal(m["fc"].weight.data, ck.zoo.resnet20(seed=0)["fc"].weight.data)


def test_batchnorm_in_frozen_blocks_stays_in_inference_mode():
    m = _randomize(ck.zoo.resnet20(seed=0), 1)
    m.freeze(up_to="layer1")
    m.train()
    bns = {p: l for p, l in m.named_layers() if isinstance(l, ck.BatchNorm2d)}
    for p, l in bns.items():
        assert l.training == (not p.startswith(("bn1", "layer1"))), p
    stats = {n: b.copy() for n, b in m.named_buffers() if n.startswith(("bn1", "layer1"))}
    x, _ = _batch(seed=3)
    feats_train = ck.zoo.features(m, "layer1")(x)          # the frozen part, run while the model trains
    m(x)                                                    # a full training forward too
    for n, b in m.named_buffers():
        if n in stats:
            assert b.tobytes() == stats[n].tobytes(), n     # running statistics did not move
    assert int(m["layer2"][0]["bn1"].num_batches_tracked) == 8   # unfrozen BN did update (7 + 1)
    m.eval()
    np.testing.assert_array_equal(ck.zoo.features(m, "layer1")(x), feats_train)   # = the running-stats output
    # the Trainer's model.train() keeps them frozen too
    opt = ck.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)
    ck.Trainer(m, opt, progress=False).fit(_batch(n=8, seed=4), None, epochs=1, batch_size=4, plots=False)
    for n, b in m.named_buffers():
        if n in stats:
            assert b.tobytes() == stats[n].tobytes(), n
    # unfreeze: trainable again, and BN follows the model's mode
    m.train().unfreeze("layer1")
    assert all(p.requires_grad for n, p in m.named_parameters() if n.startswith("layer1"))
    assert all(l.training for p, l in bns.items() if p.startswith("layer1")) and not bns["bn1"].training
    m.unfreeze()
    assert all(p.requires_grad for p in m.parameters()) and all(l.training for l in bns.values())


def test_freeze_by_name_dotted_paths_and_errors():
    m = ck.zoo.vgg11_bn(hidden=8, seed=0)
    m.freeze(up_to="features.10")
    names = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert names[-1] == "features.9.bias" and "features.11.weight" not in names   # 8 conv, 9 BN, 10 ReLU
    assert "features.9.weight" in names
    m.unfreeze()
    m.freeze("classifier")
    assert [n for n, p in m.named_parameters() if not p.requires_grad][0] == "classifier.0.weight"
    m.unfreeze().freeze()
    assert not any(p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError, match=r"up_to must name a layer, got 'layer9'.*'features', 'avgpool'"):
        m.freeze(up_to="layer9")
    with pytest.raises(ValueError, match="no layer 'features.99'"):
        m.freeze("features.99")


# ---------------------------------------------------------------- heads, features, learning rates

def test_replace_head():
    m = small_resnet(seed=0, num_classes=1000)
    m.freeze()
    head = m.replace_head(5, seed=1)
    assert m["fc"] is head and head.weight.shape == (5, 64) and head.weight.requires_grad
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    x, _ = _batch(n=2)
    assert m(x).shape == (2, 5)
    assert list(ck.zoo.export_torch_state_dict(m))[-2:] == ["fc.weight", "fc.bias"]
    v = ck.zoo.vgg11(num_classes=1000, hidden=16, seed=0)
    h = v.replace_head(3)
    assert v["classifier"]["6"] is h and h.weight.shape == (3, 16)
    assert v.output_shape((1, 3, 32, 32)) == (1, 3)
    custom = v.replace_head(head=ck.Linear(16, 7, seed=0))
    assert v["classifier"]["6"] is custom and v.output_shape((1, 3, 32, 32)) == (1, 7)
    with pytest.raises(ValueError, match="exactly one of num_classes and head"):
        v.replace_head()
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        v.replace_head(0)
    g = ck.Sequential(ck.Conv2d(3, 4, 3), ck.ReLU())
    with pytest.raises(TypeError, match="is a Conv2d, not a Linear"):
        g.replace_head(2)


def test_features_at_any_stage():
    m = _randomize(ck.zoo.resnet20(seed=0), 1)
    x, _ = _batch(n=5, seed=2)
    m.eval()
    h = m["bn1"](m["conv1"](x))
    h = m["layer1"](m["relu"](h))
    ref2 = m["layer2"](h)
    m.train()   # features() runs in inference mode and restores the modes afterwards
    f2 = ck.zoo.features(m, "layer2", x)                   # one batch, the same computation: bit-identical
    assert f2.tobytes() == ref2.tobytes()
    assert all(l.training for _, l in m.named_layers())
    # in batches of 2: the kernels may sum in another order, so equal to float32 rounding
    f2b = ck.zoo.features(m, "layer2", x, batch_size=2)
    assert np.abs(f2b - ref2).max() <= 1e-5 * np.abs(ref2).max()
    pooled = ck.zoo.features(m, "flatten", x)
    assert pooled.shape == (5, 64)
    assert ck.zoo.features(m, "layer2", x, flatten=True).tobytes() == ref2.tobytes()
    inner = ck.zoo.features(m, "layer2.0.conv1", x)        # inside a block
    assert inner.shape == (5, 32, 8, 8)
    v = ck.zoo.vgg11(hidden=8, seed=0)
    assert ck.zoo.features(v, "features.5", np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 128, 8, 8)
    with pytest.raises(ValueError, match="stage must name a layer"):
        ck.zoo.features(m, "layer7", x)
    with pytest.raises(TypeError, match="stage must be a layer name"):
        ck.zoo.features(m, 3)


def test_linear_classifier_on_frozen_features_learns():
    # the lecture's "little data, similar dataset" cell: features + a linear classifier
    rng = np.random.default_rng(0)
    m = ck.zoo.resnet20(seed=0)
    y = rng.integers(0, 2, 40)
    x = (rng.standard_normal((40, 3, 8, 8)) + (y - 0.5)[:, None, None, None]).astype(np.float32)
    f = ck.zoo.features(m, "flatten", x)
    clf = ck.Linear(64, 2, seed=0)
    opt = ck.optim.Adam(clf.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        loss, d = ck.losses.softmax_cross_entropy(clf(f), y)
        clf.backward(d)
        opt.step()
    assert (clf(f).argmax(1) == y).mean() >= 0.9


def test_per_layer_learning_rates_through_param_groups():
    m = ck.zoo.resnet20(seed=0)
    m.freeze(up_to="layer1")
    groups = ck.zoo.param_groups(m, {"layer3": 0.01, "fc": 0.5, "layer3.2": 0.1}, weight_decay=0.0)
    assert [g["lr"] for g in groups[:3]] == [0.01, 0.5, 0.1] and "lr" not in groups[3]
    by_id = {id(p): n for n, p in m.named_parameters()}
    assert all(by_id[id(p)].startswith("layer3.2") for p in groups[2]["params"])
    assert all(by_id[id(p)].startswith(("layer3.0", "layer3.1")) for p in groups[0]["params"])
    assert all(by_id[id(p)].startswith("layer2") for p in groups[3]["params"])     # the default group
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in m.parameters())
    opt = ck.optim.SGD(groups, lr=0.001)
    before = {n: p.data.copy() for n, p in m.named_parameters()}
    x, y = _batch(seed=1)
    loss, d = ck.losses.softmax_cross_entropy(m(x), y)
    m.backward(d)
    grads = {n: p.grad.copy() for n, p in m.named_parameters()}
    opt.step()
    lr_of = {"layer3.2": 0.1, "layer3": 0.01, "fc": 0.5, "layer2": 0.001}
    for n, p in m.named_parameters():
        lr = next((v for k, v in lr_of.items() if n.startswith(k)), 0.0)
        want = before[n] - np.float32(lr) * grads[n] if lr else before[n]
        # the fused step may round p - lr * g with one FMA: equal to float32 rounding
        np.testing.assert_allclose(p.data, want.astype(np.float32), rtol=1e-6, atol=1e-9, err_msg=n)
        if not lr:
            assert p.data.tobytes() == before[n].tobytes(), n
    with pytest.raises(ValueError, match="'layer9' matches no parameter"):
        ck.zoo.param_groups(m, {"layer9": 0.1})
