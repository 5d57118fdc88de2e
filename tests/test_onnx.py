# ck.onnx.export against onnxruntime: every zoo model, a torch-style Module with a residual and a concat, each
# layer family, dynamic batch, BatchNorm folding, and the errors. onnxruntime is the outside oracle: its output
# must equal cnnkit's eval-mode output to float32 precision (one tolerance, TOL, for every comparison).
import os

import numpy as np
import pytest

import cnnkit as ck
import cnnkit.functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# max |onnxruntime - cnnkit| over the output, relative to the output's largest magnitude: float32 rounding in two
# implementations that sum in different orders (the largest seen, 1.3e-6, is in docs/onnx.md)
TOL = 1e-5


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run_ort(path, x):
    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})


def reference(model, x):
    model.eval()
    out = ck.autograd.as_array(model(x))
    return out


def assert_matches(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(float(np.abs(want).max()), float(np.finfo(np.float32).tiny))
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert err <= TOL, f"onnxruntime differs from cnnkit by {err:.3g} (relative to {scale:.3g})"


def stir_batchnorm(model, seed=0):
    """Running statistics and affine parameters away from 0 / 1, so an exported BatchNorm is not the identity."""
    rng = np.random.default_rng(seed)
    for _, layer in model.named_layers():
        if "running_mean" in layer._buffers:
            c = layer._buffers["running_mean"].shape[0]
            layer._buffers["running_mean"][...] = rng.normal(0, 0.2, c)
            layer._buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)
            if "weight" in layer._params:
                layer.weight.data[...] = rng.uniform(0.5, 1.5, c)
                layer.bias.data[...] = rng.normal(0, 0.2, c)
    return model


def export_and_compare(model, tmp_path, input_shape, batches=(None,), **kw):
    path = tmp_path / "model.onnx"
    proto = ck.onnx.export(model, path, input_shape=input_shape, **kw)
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)
    for n in batches:
        shape = input_shape if n is None else (n,) + tuple(input_shape[1:])
        x = rnd(*shape, seed=len(shape) + (n or 0))
        (got,) = run_ort(path, x)
        assert_matches(got, reference(model, x))
    return proto


ZOO = {   # small widths and heads so each runs in seconds; the architectures are the zoo's own
    "lenet5": (dict(), (2, 1, 28, 28)),
    "alexnet": (dict(num_classes=10, hidden=64), (2, 3, 64, 64)),
    "resnet18": (dict(num_classes=10, width=16), (2, 3, 32, 32)),
    "resnet34": (dict(num_classes=10, width=8), (2, 3, 32, 32)),
    "resnet50": (dict(num_classes=10, width=8), (2, 3, 32, 32)),
    "resnet20": (dict(), (2, 3, 32, 32)),
    "resnet32": (dict(), (2, 3, 32, 32)),
    "resnet56": (dict(), (2, 3, 16, 16)),
}
ZOO.update({name: (dict(num_classes=10, hidden=32), (2, 3, 32, 32))
            for name in ck.zoo.MODELS if name.startswith("vgg")})


def test_every_zoo_model_is_listed():
    assert set(ZOO) == set(ck.zoo.MODELS)


@pytest.mark.parametrize("name", sorted(ck.zoo.MODELS))
def test_zoo_model_matches_onnxruntime(name, tmp_path):
    kw, shape = ZOO[name]
    model = stir_batchnorm(ck.zoo.get_model(name, seed=0, **kw))
    export_and_compare(model, tmp_path, shape, batches=(None, 3))


class Block(ck.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = ck.nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = ck.nn.BatchNorm2d(c)
        self.conv2 = ck.nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.bn1(self.conv1(x)))))


class TorchStyle(ck.Module):
    def __init__(self):
        super().__init__()
        self.stem = ck.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.block = Block(8)
        self.side = ck.nn.Conv2d(3, 4, 1, stride=2)
        self.head = ck.nn.Linear(12, 5)

    def forward(self, x):
        h = F.cat([self.block(self.stem(x)), F.tanh(self.side(x))], dim=1)   # residual inside, concat here
        h = F.adaptive_avg_pool2d(h, 1) - F.adaptive_avg_pool2d(h * h, 1) * 0.1   # Add, Mul of values and numbers
        return F.log_softmax(self.head(F.flatten(h, 1)) * 0.5, dim=1)


def test_module_with_residual_and_concat(tmp_path):
    model = stir_batchnorm(TorchStyle())
    proto = export_and_compare(model, tmp_path, (2, 3, 16, 16), batches=(None, 1, 5))
    ops = {n.op_type for n in proto.graph.node}
    assert {"Conv", "BatchNormalization", "Add", "Concat", "LogSoftmax", "Gemm"} <= ops
    inits = {i.name for i in proto.graph.initializer}
    assert {"block.conv1.weight", "block.bn1.bias", "head.weight"} <= inits


def test_dynamic_batch_and_fixed_batch(tmp_path):
    model = ck.Sequential(ck.Conv2d(3, 4, 3), ck.ReLU(), ck.Flatten(), ck.Linear(4 * 6 * 6, 3))
    proto = export_and_compare(model, tmp_path, (2, 3, 8, 8), batches=(2, 1, 7))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    path = tmp_path / "fixed.onnx"
    proto = ck.onnx.export(model, path, input_shape=(2, 3, 8, 8), dynamic_batch=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run_ort(path, rnd(3, 3, 8, 8))


LAYERS = {   # (layers of a Sequential, input shape): every layer family the exporter maps
    "conv-groups-dilation": ([ck.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), ck.Conv2d(6, 6, (3, 1), stride=2,
                                                                                              padding=(1, 0))],
                             (2, 4, 9, 9)),
    "conv-same-even": ([ck.Conv2d(3, 4, 4, padding="same")], (2, 3, 7, 7)),
    "conv-reflect": ([ck.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
                      ck.Conv2d(4, 4, 3, padding=2, padding_mode="replicate")], (2, 3, 7, 7)),
    "conv-transpose": ([ck.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
                        ck.ConvTranspose2d(4, 4, 2, stride=1, dilation=2, groups=2)], (2, 3, 5, 6)),
    "activations": ([ck.LeakyReLU(0.2), ck.ELU(0.7), ck.GELU(), ck.GELU("tanh"), ck.SiLU(), ck.Sigmoid(), ck.Tanh(),
                     ck.PReLU(3, 0.1), ck.PReLU(), ck.ReLU()], (2, 3, 5, 5)),
    "softmax": ([ck.Flatten(), ck.Softmax(1), ck.LogSoftmax(-1)], (3, 2, 2, 2)),
    "maxpool-ceil-dilation": ([ck.MaxPool2d(3, 2, padding=1, ceil_mode=True), ck.MaxPool2d(2, 1, dilation=2)],
                              (2, 3, 10, 10)),
    "maxpool-ceil-drops-a-window": ([ck.MaxPool2d(2, 2, padding=1, ceil_mode=True),        # 9 -> 5 as torch, not 6
                                     ck.MaxPool2d(3, 2, ceil_mode=True, dilation=(1, 2))], (2, 3, 9, 12)),
    "avgpool": ([ck.AvgPool2d(3, 2, padding=1), ck.AvgPool2d(2, padding=1, count_include_pad=False)], (2, 3, 9, 9)),
    "adaptive": ([ck.AdaptiveAvgPool2d((3, 2)), ck.AdaptiveAvgPool2d(5), ck.AdaptiveMaxPool2d(1)], (2, 3, 7, 7)),
    "adaptive-divisible": ([ck.AdaptiveAvgPool2d(4), ck.AdaptiveMaxPool2d(2), ck.GlobalAvgPool2d()], (2, 3, 8, 8)),
    "norms": ([ck.BatchNorm2d(4), ck.GroupNorm(2, 4), ck.InstanceNorm2d(4, affine=True), ck.InstanceNorm2d(4),
               ck.LayerNorm((4, 5, 5)), ck.LocalResponseNorm(3)], (2, 4, 5, 5)),
    "batchnorm1d-layernorm": ([ck.Flatten(), ck.BatchNorm1d(12), ck.LayerNorm(12, bias=False),
                               ck.BatchNorm1d(12, affine=False), ck.Linear(12, 3)], (4, 3, 2, 2)),
    "resample": ([ck.ZeroPad2d((1, 2, 0, 3)), ck.Upsample(scale_factor=2), ck.Upsample(size=(5, 7)),
                  ck.Upsample(size=9, mode="bilinear"), ck.Upsample(scale_factor=(2, 3), mode="bilinear",
                                                                    align_corners=True)], (2, 3, 4, 4)),
    "dropout-identity": ([ck.Dropout(0.5), ck.Dropout2d(0.3), ck.Identity(), ck.StochasticDepth(0.5),
                          ck.Flatten(), ck.DropConnect(48, 3, p=0.5)], (2, 3, 4, 4)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_families_match_onnxruntime(name, tmp_path):
    layers, shape = LAYERS[name]
    model = stir_batchnorm(ck.Sequential(*layers))
    export_and_compare(model, tmp_path, shape, batches=(None, 3))


def test_graph_with_add_and_concat(tmp_path):
    x = ck.Input((3, 8, 8))
    a = ck.ReLU()(ck.Conv2d(3, 4, 3, padding=1)(x))
    b = ck.Conv2d(3, 4, 1)(x)
    h = ck.Concat()(ck.Add()(a, b, ck.Conv2d(3, 4, 3, padding=1)(x)), a)
    model = ck.Graph(x, ck.Linear(8, 2)(ck.Flatten()(ck.GlobalAvgPool2d()(h))))
    proto = export_and_compare(model, tmp_path, (1, 3, 8, 8), batches=(None, 4))
    assert {"Sum", "Concat", "GlobalAveragePool"} <= {n.op_type for n in proto.graph.node}


def test_fold_batchnorm_into_the_convolution(tmp_path):
    model = stir_batchnorm(ck.zoo.resnet20(seed=0))
    proto = export_and_compare(model, tmp_path, (2, 3, 16, 16), batches=(None, 3), fold_batchnorm=True)
    ops = [n.op_type for n in proto.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 19


def test_export_leaves_training_mode_and_the_model_unchanged(tmp_path):
    model = stir_batchnorm(ck.Sequential(ck.Conv2d(3, 4, 3), ck.BatchNorm2d(4), ck.Dropout(0.5)))
    model.train()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    ck.onnx.export(model, tmp_path / "m.onnx", input_shape=(2, 3, 5, 5))
    assert model.training and all(layer.training for _, layer in model.named_layers())
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_layer_with_no_onnx_form_is_an_export_error(tmp_path):
    model = ck.Sequential(ck.Conv2d(3, 4, 3), ck.FractionalMaxPool2d(2, output_size=2, name="fmp"))
    with pytest.raises(ck.onnx.ExportError, match="FractionalMaxPool2d 'fmp'.*FractionalMaxPool2d"):
        ck.onnx.export(model, tmp_path / "m.onnx", input_shape=(1, 3, 8, 8))
    assert issubclass(ck.onnx.ExportError, ValueError)
    assert not (tmp_path / "m.onnx").exists()

    class Plus(ck.Module):
        def forward(self, x):
            return F.relu(x) + 1.0

    with pytest.raises(ck.onnx.ExportError, match="F.add"):
        ck.onnx.export(Plus(), tmp_path / "p.onnx", input_shape=(1, 3, 4, 4))
    class Clipped(ck.ReLU):    # its own forward: not what the ReLU rule writes
        def forward(self, x):
            return np.minimum(super().forward(x), 1.0)

    with pytest.raises(ck.onnx.ExportError, match=r"layer Clipped \(Clipped\) has no ONNX export"):
        ck.onnx.export(ck.Sequential(Clipped()), tmp_path / "c.onnx", input_shape=(1, 3, 4, 4))
    with pytest.raises(ck.onnx.ExportError, match="AdaptiveMaxPool2d"):
        ck.onnx.export(ck.Sequential(ck.AdaptiveMaxPool2d(3)), tmp_path / "a.onnx", input_shape=(1, 1, 7, 7))


def test_argument_checks(tmp_path):
    model = ck.Sequential(ck.Conv2d(3, 4, 3))
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        ck.onnx.export(model, 3, input_shape=(1, 3, 8, 8))
    for bad in [(), (1, 0, 8, 8), (1, 3, 8.0, 8), "1,3,8,8", None, (True, 3, 8, 8)]:
        with pytest.raises(ValueError, match="input_shape must be a non-empty tuple of positive ints"):
            ck.onnx.export(model, tmp_path / "m.onnx", input_shape=bad)
    for bad in [16, 22, -1]:
        with pytest.raises(ValueError, match=rf"opset must be in \[17, 21\], got {bad}"):
            ck.onnx.export(model, tmp_path / "m.onnx", input_shape=(1, 3, 8, 8), opset=bad)
    with pytest.raises(TypeError, match="opset must be an int, got str"):
        ck.onnx.export(model, tmp_path / "m.onnx", input_shape=(1, 3, 8, 8), opset="17")
    with pytest.raises(TypeError, match="model must be a ck.Sequential.*got list"):
        ck.onnx.export([model], tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="expects 3 input channels"):
        ck.onnx.export(model, tmp_path / "m.onnx", input_shape=(1, 2, 8, 8))


@pytest.mark.parametrize("opset", [17, 18, 20, 21])
def test_opsets(opset, tmp_path):
    model = ck.Sequential(ck.Conv2d(3, 4, 3, padding=1, padding_mode="circular" if opset >= 19 else "zeros"),
                          ck.GELU(), ck.GroupNorm(2, 4), ck.Flatten(), ck.Linear(64, 3))
    proto = export_and_compare(model, tmp_path, (1, 3, 4, 4), batches=(None, 2), opset=opset)
    assert proto.opset_import[0].version == opset


def test_circular_padding_needs_opset_19(tmp_path):
    model = ck.Sequential(ck.Conv2d(3, 4, 3, padding=1, padding_mode="circular", name="wrap"))
    with pytest.raises(ck.onnx.ExportError, match="'wrap' padding_mode 'circular' needs opset >= 19"):
        ck.onnx.export(model, tmp_path / "m.onnx", input_shape=(1, 3, 4, 4))


def test_the_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    model = ck.Sequential(ck.Conv2d(3, 4, 3))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.onnx.export(model, path, input_shape=(1, 3, 8, 8))
    assert path.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)    # what `import onnx` meets when it is not installed
    with pytest.raises(ImportError, match=r'pip install "cnnkit\[onnx\]"'):
        ck.onnx.export(ck.Sequential(ck.ReLU()), tmp_path / "m.onnx", input_shape=(1, 3, 4, 4))


class TwoHeads(ck.Module):
    def __init__(self):
        super().__init__()
        self.conv = ck.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = ck.nn.Linear(4, 2)

    def forward(self, x):
        feat = F.flatten(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1), 1)
        return self.fc(feat), feat


def test_several_outputs_and_export_under_no_grad(tmp_path):
    model = TwoHeads()
    path = tmp_path / "two.onnx"
    with ck.no_grad():
        proto = ck.onnx.export(model, path, input_shape=(1, 3, 6, 6))
    assert [o.name for o in proto.graph.output] == ["output0", "output1"]
    x = rnd(4, 3, 6, 6)
    want = reference(model, x)
    for got, w in zip(run_ort(path, x), want):
        assert_matches(got, w)
