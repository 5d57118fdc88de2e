# ck.save / ck.load of nested data (state dicts of models, optimizers and schedules, a loop's own counters): one
# safetensors file, no pickle. Round trips keep types, dtypes and containers; a hand-written loop resumed from
# ck.load equals the uninterrupted loop bit for bit; bad objects and tampered files are clear errors.
import json
import os
import struct

import numpy as np
import pytest

import cnnkit as ck
from cnnkit.serialize import ModelFileError, ObjectFileError

pytest.importorskip("safetensors")


def roundtrip(obj, tmp_path, name="obj.safetensors"):
    path = tmp_path / name
    ck.save(obj, path)
    return ck.load(path)


def assert_same(a, b):
    """Equal values of equal types all the way down (arrays: dtype, shape and every bit, NaN included)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b)
    else:
        assert a == b


def test_arrays_keep_dtype_shape_and_bits(tmp_path):
    rng = np.random.default_rng(0)
    obj = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f64": np.array([np.pi, -0.0, np.inf, np.nan, 5e-324]),
        "i64": np.array([[-(2**63), 2**63 - 1]], dtype=np.int64),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "bool": np.array([True, False, True]),
        "zero_d": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 5), dtype=np.float32),
        "strided": np.arange(20, dtype=np.float64).reshape(4, 5).T[::2],   # not contiguous: saved as its values
        "scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), np.uint8(255)],
    }
    back = roundtrip(obj, tmp_path)
    want = dict(obj, strided=np.ascontiguousarray(obj["strided"]))
    assert_same(want, back)
    assert all(isinstance(v, np.ndarray) for k, v in back.items() if k != "scalars")


def test_plain_values_and_containers(tmp_path):
    obj = {"epoch": 12, "big": 2**100, "lr": 0.1, "neg_zero": -0.0, "inf": float("inf"), "nan": float("nan"),
           "flag": False, "none": None, "name": "résumé ✓", "": "empty key",
           "list": [1, [2, (3, 4.0)], ()], "tuple": (None, [True], {"x": (np.zeros(2),)}),
           "empty": [{}, [], (), ""], "order": {"b": 1, "a": 2, "c": 3}}
    back = roundtrip(obj, tmp_path)
    assert_same(obj, back)
    assert isinstance(back["tuple"], tuple) and isinstance(back["list"][1][1], tuple) and isinstance(back["list"], list)
    for top in (5, 2.5, "s", None, True, (), [], {}, np.ones(3)):
        assert_same(top, roundtrip(top, tmp_path))


def test_non_string_keys_and_unsupported_values_are_errors(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match=r"obj\['state'\]: dict keys must be str .*got int key 0"):
        ck.save({"state": {0: np.zeros(2)}}, path)
    with pytest.raises(TypeError, match=r"obj\['a'\]\[1\]: cannot save a set"):
        ck.save({"a": [1, {2}]}, path)
    with pytest.raises(TypeError, match=r"obj\[0\]: arrays must have a numeric or bool dtype, got complex128"):
        ck.save([np.zeros(2, complex)], path)
    with pytest.raises(TypeError, match="arrays must have a numeric or bool dtype, got object"):
        ck.save(np.array([None, 1]), path)
    loop = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match=r"obj\[1\] contains itself"):
        ck.save(loop, path)
    deep = []
    for _ in range(70):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than 64 deep"):
        ck.save(deep, path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        ck.save({}, 3)
    assert not path.exists()


def test_models_and_modules(tmp_path):
    model = ck.Sequential(ck.Conv2d(1, 2, 3, seed=0), ck.BatchNorm2d(2), ck.ReLU(), ck.Flatten(), ck.Linear(8, 3))
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 4)).astype(np.float32)
    model(x)                                      # move the running statistics
    model.eval()
    back = roundtrip(model, tmp_path, "model.safetensors")   # the model format: ck.load rebuilds it
    assert isinstance(back, ck.Sequential)
    back.eval()
    assert np.array_equal(back(x), model(x))

    class Net(ck.Module):
        def __init__(self):
            super().__init__()
            self.fc = ck.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    net = Net()
    with pytest.raises(TypeError, match=r"Net is a ck\.Module.*ck\.save\(model\.state_dict\(\), path\)"):
        ck.save(net, tmp_path / "net.safetensors")
    ck.save(net.state_dict(), tmp_path / "net.safetensors")
    other = Net()
    other.load_state_dict(ck.load(tmp_path / "net.safetensors"))
    assert np.array_equal(other.fc.weight.data, net.fc.weight.data)


def test_cupy_arrays_are_saved_from_a_host_copy(tmp_path, monkeypatch):
    from helpers import fakecupy
    cp = fakecupy.install(monkeypatch)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    back = roundtrip({"w": cp.asarray(a)}, tmp_path)
    assert type(back["w"]) is np.ndarray and np.array_equal(back["w"], a) and back["w"].dtype == np.float32


def make_run(seed=0):
    ck.manual_seed(seed)
    model = ck.Sequential(ck.Conv2d(1, 4, 3, padding=1, seed=1), ck.BatchNorm2d(4), ck.ReLU(), ck.Dropout(0.3),
                          ck.Flatten(), ck.Linear(4 * 8 * 8, 10, seed=2), seed=3)
    opt = ck.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = ck.schedules.CosineAnnealingLR(opt, T_max=6)
    return model, opt, sched


def epoch(model, opt, data, e):
    criterion = ck.nn.CrossEntropyLoss()
    model.train()
    losses = []
    for x, y in ck.data.DataLoader(data, 32, shuffle=True, seed=100 + e):
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_a_resumed_hand_written_loop_equals_the_uninterrupted_one_bit_for_bit(tmp_path):
    data = ck.data.load_digits()["train"]
    model, opt, sched = make_run()
    straight = []
    for e in range(6):
        straight += epoch(model, opt, data, e)
        sched.step()
    final, final_lr = model.state_dict(), opt.param_groups[0]["lr"]

    model, opt, sched = make_run()
    resumed = []
    for e in range(3):
        resumed += epoch(model, opt, data, e)
        sched.step()
    ck.save({"model": model.state_dict(), "rng": model.rng_state(), "optimizer": opt.state_dict(),
             "schedule": sched.state_dict(), "epoch": 3, "losses": resumed}, tmp_path / "ckpt.safetensors")
    del model, opt, sched

    model, opt, sched = make_run(seed=99)      # a fresh start with other weights: everything must come from the file
    ck_state = ck.load(tmp_path / "ckpt.safetensors")
    model.load_state_dict(ck_state["model"])
    model.set_rng_state(ck_state["rng"])
    opt.load_state_dict(ck_state["optimizer"])
    sched.load_state_dict(ck_state["schedule"])
    resumed = ck_state["losses"]
    for e in range(ck_state["epoch"], 6):
        resumed += epoch(model, opt, data, e)
        sched.step()
    assert resumed == straight
    for k, v in model.state_dict().items():
        assert v.tobytes() == final[k].tobytes(), k
    assert opt.param_groups[0]["lr"] == final_lr and opt.state_dict()["skipped_steps"] == 0


# ---------------------------------------------------------------- files that are not what they claim
def write_raw(path, header, payload=b""):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + payload)
    return path


def parts(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.safetensors"
    ck.save({"w": np.arange(4, dtype=np.float32), "s": np.float64(2.0), "n": [1, (2,)]}, path)
    return path


def tampered(saved, tmp_path, edit, payload=None):
    header, data = parts(saved)
    edit(header)
    return write_raw(tmp_path / "bad.safetensors", header, data if payload is None else payload)


def skeleton_edit(new):
    def edit(h):
        h["__metadata__"]["skeleton"] = json.dumps(new)
    return edit


@pytest.mark.parametrize("case,edit,reason", [
    ("missing tensor", skeleton_edit({"dict": {"w": {"array": "7"}, "s": {"scalar": "1"}}}), "names tensor '7'"),
    ("tensor twice", skeleton_edit({"list": [{"array": "0"}, {"array": "0"}, {"scalar": "1"}]}), "used twice"),
    ("unused tensor", skeleton_edit({"dict": {"w": {"array": "0"}}}), r"tensors \['1'\] are not in the skeleton"),
    ("unknown tag", skeleton_edit({"pickle": "os.system"}), "one-key object tagged"),
    ("two tags", skeleton_edit({"list": [], "dict": {}}), "one-key object tagged"),
    ("dict body", skeleton_edit({"dict": [1, 2]}), "dict must hold an object"),
    ("tuple body", skeleton_edit({"tuple": {"a": 1}}), "tuple must hold an array"),
    ("scalar shape", skeleton_edit({"list": [{"scalar": "0"}, {"scalar": "1"}]}), r"scalar tensor '0' has shape \(4,\)"),
    ("bad float", skeleton_edit({"float": "1e999"}), "float must be 'inf', '-inf' or 'nan'"),
    ("deep", skeleton_edit(json.loads('{"list": [' * 80 + ']}' * 80)), "nested more than 64 deep"),
    ("not json", lambda h: h["__metadata__"].update(skeleton="{"), "skeleton metadata is not JSON"),
    ("checksum", lambda h: h["__metadata__"].update(sha256="0" * 64), "checksum"),
    ("version", lambda h: h["__metadata__"].update(version="x"), "'version' must be a decimal integer"),
    ("huge claim", lambda h: h["0"].update(shape=[2**40, 2**20]), "does not fill data_offsets"),
    ("offsets", lambda h: h["0"].update(shape=[2**48], data_offsets=[0, 2**50]), "tensor data should be"),
])
def test_tampered_object_files_are_clear_errors(saved, tmp_path, case, edit, reason):
    bad = tampered(saved, tmp_path, edit)
    with pytest.raises(ObjectFileError, match=rf"bad\.safetensors.*{reason}"):
        ck.load(bad)
    assert issubclass(ObjectFileError, ValueError)


def test_truncated_or_flipped_bytes_never_load(saved, tmp_path):
    data = saved.read_bytes()
    for name, blob in {"cut": data[:-3], "flip": data[:-2] + bytes([data[-2] ^ 1]) + data[-1:],
                       "empty": b"", "extra": data + b"\0"}.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(blob)
        with pytest.raises((ObjectFileError, ModelFileError), match=rf"{name}\.safetensors"):
            ck.load(bad)


def test_newer_version_is_refused(saved, tmp_path):
    bad = tampered(saved, tmp_path, lambda h: h["__metadata__"].update(version="2"))
    with pytest.raises(ObjectFileError, match="format version 2, newer than this cnnkit"):
        ck.load(bad)


def test_the_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    ck.save({"epoch": 1}, path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.save({"epoch": 2, "w": np.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and ck.load(path) == {"epoch": 1}
    assert sorted(os.listdir(tmp_path)) == ["ckpt.safetensors"]


def test_the_readme_checkpoint_snippet_runs(tmp_path, monkeypatch):
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    first = re.search(r"## Using the library\n\n```python\n(.*?)```", text, re.S).group(1)
    snippet = re.search(r"Checkpoint a hand-written loop.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    env = {"__name__": "readme"}
    exec(compile(first.replace("epochs=10", "epochs=1"), "README.md", "exec"), env)
    want = {k: v.copy() for k, v in env["model"].state_dict().items()}
    exec(compile(snippet, "README.md", "exec"), env)
    assert env["state"]["epoch"] == 3 and (tmp_path / "ckpt.safetensors").exists()
    assert all(np.array_equal(v, want[k]) for k, v in env["model"].state_dict().items())
