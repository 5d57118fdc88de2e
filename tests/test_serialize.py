# model.save / ck.load: one safetensors file with the architecture as JSON metadata. A model comes back
# from the file alone (Sequential, Graph, nested, custom layers, BatchNorm buffers, frozen flags, random
# streams); writes are atomic; truncated or corrupted files raise ValueError instead of loading.
import json
import os
import struct

import numpy as np
import pytest

import cnnkit as ck

pytest.importorskip("safetensors")


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def trained_net():
    x = ck.Input((3, 8, 8))
    h = ck.ReLU()(ck.BatchNorm2d(4)(ck.Conv2d(3, 4, 3, padding=1, bias=False, seed=0)(x)))
    h = ck.Add()(ck.Conv2d(4, 4, 3, padding=1, seed=1)(h), h)
    h = ck.MaxPool2d(2)(h)
    h = ck.Dropout(0.3)(ck.Flatten()(h))
    model = ck.Graph(x, ck.Linear(64, 5, seed=2, name="head")(h), seed=7)
    for s in range(2):   # move weights off their initial values and the running statistics off 0/1
        model(rnd(4, 3, 8, 8, seed=s))
        model.backward(rnd(4, 5, seed=10 + s))
        for p in model.parameters():
            p.data -= 0.1 * p.grad
    model["conv2d1"].bias.requires_grad = False
    return model


def test_roundtrip_graph_rebuilds_from_the_file_alone(tmp_path):
    model = trained_net()
    path = tmp_path / "net.safetensors"
    model.save(path)
    loaded = ck.load(path)
    assert isinstance(loaded, ck.Graph) and repr(loaded) == repr(model)
    for (n, p), (m, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n == m and p.data.dtype == q.data.dtype and np.array_equal(p.data, q.data)
        assert q.requires_grad == p.requires_grad and not q.grad.any()
    for (n, b), (m, c) in zip(model.named_buffers(), loaded.named_buffers()):
        assert n == m and np.array_equal(b, c) and b.dtype == c.dtype
    assert int(loaded["batchnorm2d0"].num_batches_tracked) == 2
    assert loaded.rng_state() == model.rng_state()
    x = rnd(2, 3, 8, 8, seed=5)
    np.testing.assert_array_equal(loaded(x), model(x))     # train mode: the same dropout stream continues
    model.eval(), loaded.eval()
    np.testing.assert_array_equal(loaded(x), model(x))


def test_roundtrip_sequential_nested_and_float64(tmp_path):
    model = ck.Sequential(ck.Sequential(ck.Linear(4, 6, seed=0), ck.LeakyReLU(0.2)), ck.BatchNorm1d(6, momentum=None),
                          ck.DropConnect(6, 3, p=0.25, seed=1), ck.ReLU(), seed=3)
    model.to(np.float64)
    model.eval()
    model.save(tmp_path / "m")
    loaded = ck.load(tmp_path / "m")
    assert not loaded.training and loaded[2].p == 0.25 and loaded[1].momentum is None
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(loaded(x), model(x))
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in model.named_parameters()]


class Affine(ck.Layer):
    def __init__(self, n, name=None):
        super().__init__(name=name)
        self.n = n
        self.add_parameter("a", np.arange(n, dtype=np.float32))

    def forward(self, x):
        return x * self.a.data

    def config(self):
        return {"n": self.n}


def test_custom_layer_roundtrip(tmp_path):
    model = ck.Sequential(ck.Linear(3, 4, seed=0), Affine(4))
    model.save(tmp_path / "c.st")
    loaded = ck.load(tmp_path / "c.st")
    assert type(loaded[1]) is Affine and np.array_equal(loaded[1].a.data, np.arange(4))


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    model = trained_net()
    model.save(path)
    before = path.read_bytes()
    model["head"].weight.data += 1.0

    def boom(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        model.save(path)
    assert path.read_bytes() == before                     # the previous file is intact
    assert sorted(os.listdir(tmp_path)) == ["ckpt.safetensors"]   # and no temp file is left behind
    monkeypatch.undo()
    model.save(path)
    assert np.array_equal(ck.load(path)["head"].weight.data, model["head"].weight.data)


def test_truncated_or_corrupt_files_raise(tmp_path):
    path = tmp_path / "m.safetensors"
    trained_net().save(path)
    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    cases = {
        "empty": b"",
        "short": data[:5],
        "header cut": data[:8 + hlen // 2],
        "data cut": data[:-7],
        "extra bytes": data + b"\0\0\0\0",
        "flipped weight byte": data[:-3] + bytes([data[-3] ^ 0x40]) + data[-2:],
        "flipped header byte": data[:20] + b"\xff" + data[21:],
    }
    for name, blob in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        bad.write_bytes(blob)
        with pytest.raises(ValueError, match="not a valid cnnkit model file"):
            ck.load(bad)
    # a valid safetensors file that is not ours
    from safetensors.numpy import save_file
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="metadata format is None"):
        ck.load(tmp_path / "other.safetensors")


def test_architecture_is_json_in_the_header(tmp_path):
    path = tmp_path / "m.safetensors"
    ck.Sequential(ck.Conv2d(1, 2, 3, seed=0), ck.ReLU()).save(path)
    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    arch = json.loads(header["__metadata__"]["architecture"])
    assert arch["class"] == "Sequential"
    assert [c["class"] for c in arch["config"]["layers"]] == ["Conv2d", "ReLU"]
    assert header["0.weight"]["shape"] == [2, 1, 3, 3] and header["0.weight"]["dtype"] == "F32"


def test_save_into_a_missing_folder_names_the_path(tmp_path):
    target = tmp_path / "missing" / "net.safetensors"
    with pytest.raises(FileNotFoundError, match=r"cannot write .*missing/net.safetensors: the folder .*missing does not exist"):
        ck.Linear(2, 2).save(str(target))
    assert not (tmp_path / "missing").exists()
