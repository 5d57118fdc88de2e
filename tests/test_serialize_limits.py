"""ck.load on hostile or odd model files: every problem is a clear ModelFileError (a ValueError) naming the
file and what is wrong, found before anything large is allocated; subclasses of Sequential are refused with
what to do instead."""
import json
import resource
import struct
import time

import numpy as np
import pytest

import cnnkit as ck
from cnnkit.serialize import ModelFileError


def _file(path, header, data=b""):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


def _meta(arch, **kw):
    m = {"format": "cnnkit.model", "version": "1", "architecture": json.dumps(arch), "rng": "{}",
         "training": "true", "sha256": ck.serialize._digest({})}
    m.update(kw)
    return m


def _linear(n_in, n_out):
    return {"name": "model", "class": "Sequential",
            "config": {"layers": [{"name": "0", "class": "Linear", "config": {"in_features": n_in,
                                                                             "out_features": n_out}}],
                       "seed": 0}}


@pytest.mark.parametrize("n", [20000, 2 ** 20])
def test_a_tiny_file_claiming_a_huge_layer_is_refused_before_building(tmp_path, n):
    path = _file(tmp_path / "big.safetensors", {"__metadata__": _meta(_linear(n, n))})
    assert path.stat().st_size < 400
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"big\.safetensors.*architecture"):
        ck.load(path)
    assert time.perf_counter() - t < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000   # KiB: no 1.6 GB allocation


def test_header_shapes_must_match_the_architecture_before_building(tmp_path):
    # a valid tensor of the wrong shape for the layer the architecture describes
    w = np.zeros((2, 3), np.float32)
    from safetensors.numpy import save
    meta = _meta(_linear(3000, 3000), sha256=ck.serialize._digest({"0.weight": w}))
    path = tmp_path / "wrong.safetensors"
    path.write_bytes(save({"0.weight": w}, metadata=meta))
    with pytest.raises(ModelFileError, match=r"wrong\.safetensors.*0\.weight"):
        ck.load(path)


BAD = [
    ("header", lambda p: _file(p, [1, 2, 3])),
    ("header", lambda p: _file(p, {"__metadata__": [1]})),
    ("version", lambda p: _file(p, {"__metadata__": _meta(_linear(2, 2), version="abc")})),
    ("architecture", lambda p: _file(p, {"__metadata__": _meta("[" * 3000 + "]" * 3000)})),
    ("architecture", lambda p: _file(p, {"__metadata__": _meta([1, 2])})),
    ("architecture", lambda p: _file(p, {"__metadata__": _meta(
        {"name": "model", "class": "Sequential", "config": {"layers": 5}})})),
    ("data_offsets", lambda p: _file(p, {"__metadata__": _meta(_linear(2, 2)),
                                         "0.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": "x"}})),
    ("rng", lambda p: _file(p, {"__metadata__": _meta({"name": "model", "class": "Sequential",
                                                        "config": {"layers": [], "seed": 0}}, rng="[1]")})),
]


def _deep_arch(depth):
    a = {"name": "0", "class": "ReLU", "config": {}}
    for _ in range(depth):
        a = {"name": "0", "class": "Sequential", "config": {"layers": [a], "seed": 0}}
    return a


@pytest.mark.parametrize("field,make", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_tampered_model_files_are_model_file_errors(tmp_path, field, make):
    path = make(tmp_path / "t.safetensors")
    with pytest.raises(ModelFileError, match=r"t\.safetensors.*" + field):
        ck.load(path)


def test_a_3000_deep_architecture_is_refused(tmp_path):
    # as a JSON string the architecture nests 3,000 Sequentials: too deep to rebuild
    arch = json.dumps(_deep_arch(1))
    for _ in range(2999):
        arch = '{"name": "0", "class": "Sequential", "config": {"layers": [' + arch + '], "seed": 0}}'
    path = _file(tmp_path / "deep.safetensors", {"__metadata__": dict(_meta({}), architecture=arch)})
    with pytest.raises(ModelFileError, match=r"deep\.safetensors.*architecture.*deep"):
        ck.load(path)


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)


# ---------------------------------------------------------------- subclasses of Sequential

class Wide(ck.Sequential):
    def __init__(self, width):
        super().__init__(ck.Linear(3, width, seed=0), ck.ReLU())


def test_saving_a_sequential_subclass_says_how_to_save_it(tmp_path):
    model = Wide(4)
    with pytest.raises(TypeError, match=r"Wide.*subclass of ck\.Sequential.*load_state_dict"):
        model.save(tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()
    # the torch way works: weights to a file, the class rebuilt in code, the weights loaded into it
    ck.zoo.export_torch_state_dict(model, tmp_path / "w.safetensors")
    again = Wide(4)
    again[0].weight.data[...] = 0
    again.load_state_dict(str(tmp_path / "w.safetensors"))
    assert np.array_equal(again[0].weight.data, model[0].weight.data)


def test_a_file_naming_a_sequential_subclass_is_refused_clearly(tmp_path):
    path = tmp_path / "m.safetensors"
    ck.Sequential(ck.Linear(3, 4, seed=0), ck.ReLU()).save(path)
    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    arch = json.loads(header["__metadata__"]["architecture"])
    arch["class"] = "Wide"
    header["__metadata__"]["architecture"] = json.dumps(arch)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data[8 + hlen:])
    with pytest.raises(ModelFileError, match=r"m\.safetensors.*Wide.*subclass of ck\.Sequential.*load_state_dict"):
        ck.load(path)
