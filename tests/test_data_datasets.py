"""Datasets: the bundled digits, and each on-disk format built small in its real layout, then corrupted.
Every bad file must raise DataFormatError naming the file and what was wrong."""
import gzip
import os
import pickle
import re
import struct
import sys
import zipfile

import numpy as np
import pytest

from cnnkit import data as D
from cnnkit.data import DataFormatError

RNG = np.random.default_rng(0)


def isolated_error(run_isolated, call, path, match, memory_headroom=None, timeout=120):
    """call(path) (e.g. "D.read_idx") in a child process (conftest's run_isolated), so that a crash, a hang
    or a huge allocation fails the test instead of the test run: it must raise DataFormatError matching
    `match` and exit cleanly. memory_headroom (bytes): address space the call may add to what the child
    holds after importing cnnkit (RLIMIT_AS), to prove it allocates no more."""
    limit = "" if memory_headroom is None else f"""
        import resource
        vm = [int(s.split()[1]) * 1024 for s in open("/proc/self/status") if s.startswith("VmSize:")][0]
        resource.setrlimit(resource.RLIMIT_AS, (vm + {memory_headroom}, resource.getrlimit(resource.RLIMIT_AS)[1]))"""
    r = run_isolated(f"""
        from cnnkit import data as D
        {limit.strip()}
        try:
            {call}({str(path)!r})
        except D.DataFormatError as e:
            print("DataFormatError:", e)
        """, timeout=timeout)
    assert r.returncode == 0, f"exit status {r.returncode}\n{r.stdout}{r.stderr[-3000:]}"
    assert re.search(match, r.stdout), r.stdout + r.stderr[-3000:]
    assert str(path) in r.stdout


# ---------------------------------------------------------------- bundled digits

def test_digits_split_and_values():
    s = D.load_digits()
    assert [len(s[k]) for k in ("train", "val", "test")] == [1197, 300, 300]
    for ds in s.values():
        assert ds.x.shape[1:] == (1, 8, 8) and ds.x.dtype == np.float32 and ds.y.dtype == np.int64
        assert ds.x.min() == 0.0 and ds.x.max() == 1.0
        assert set(ds.y.tolist()) == set(range(10))
    raw = D.load_digits(dtype=np.uint8)
    np.testing.assert_array_equal(raw["train"].x.astype(np.float32) / 16, s["train"].x)
    # the split is fixed: the same every call, disjoint, covering all 1,797 images
    allx = np.concatenate([raw[k].x.reshape(-1, 64) for k in ("train", "val", "test")])
    assert len(allx) == 1797


def test_digits_file_content_is_pinned():
    import hashlib
    with np.load(D.datasets.DIGITS_FILE) as f:
        blob = f["images"].tobytes() + f["labels"].tobytes() + f["split"].tobytes()
    # printed by tools/make_digits.py; a change to the bundled data or its split must be deliberate
    assert hashlib.sha256(blob).hexdigest() == "83c78958d04f44b7b617f45e57ee435d1b2f063c4bc874580825c3be3a5edb69"


def test_digits_match_scikit_learn():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    with np.load(D.datasets.DIGITS_FILE) as f:
        np.testing.assert_array_equal(f["images"], d.images)
        np.testing.assert_array_equal(f["labels"], d.target)
        split = f["split"]
    s = D.load_digits(dtype=np.uint8)
    np.testing.assert_array_equal(s["val"].x[:, 0], d.images[split == 1])
    np.testing.assert_array_equal(s["test"].y, d.target[split == 2])


def test_digits_licence_ships_with_the_data():
    text = (D.datasets.DIGITS_FILE.parent / "DIGITS_LICENSE.txt").read_text()
    assert "CC BY 4.0" in text and "Alpaydin" in text


# ---------------------------------------------------------------- CIFAR binary

def cifar_records(n, label_bytes=1, max_label=10):
    labels = RNG.integers(0, max_label, size=(n, label_bytes), dtype=np.uint8)
    pixels = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return labels, pixels, np.concatenate([labels, pixels], axis=1).tobytes()


@pytest.fixture
def cifar10_bin(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    truth = {"train": [], "test": []}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels, pixels, blob = cifar_records(3)
        (d / name).write_bytes(blob)
        truth["test" if name.startswith("test") else "train"].append((labels[:, 0], pixels))
    (d / "batches.meta.txt").write_text("\n".join(D.datasets.CIFAR10_CLASSES) + "\n")
    return tmp_path, d, truth


def test_cifar10_binary_reads(cifar10_bin):
    root, d, truth = cifar10_bin
    s = D.load_cifar10(root)
    assert s["train"].x.shape == (15, 3, 32, 32) and s["test"].x.shape == (3, 3, 32, 32)
    pixels = np.concatenate([p for _, p in truth["train"]])
    np.testing.assert_array_equal(s["train"].y, np.concatenate([lab for lab, _ in truth["train"]]))
    np.testing.assert_allclose(s["train"].x.reshape(15, -1), pixels / 255.0, rtol=1e-6)
    raw = D.load_cifar10(d, format="binary", dtype=np.uint8)
    np.testing.assert_array_equal(raw["train"].x.reshape(15, -1), pixels)  # R plane, G plane, B plane
    assert raw["train"].classes[0] == "airplane"


@pytest.mark.parametrize("corrupt,match", [
    (lambda b: b[:-1], "truncated or corrupt: size 9218 bytes is not a multiple of the record size 3073"),
    (lambda b: b"", "file is empty"),
    (lambda b: b[:3073] + bytes([10]) + b[3074:], "mislabelled: record 1 has label 10, expected 0..9"),
])
def test_cifar10_binary_corrupt(cifar10_bin, corrupt, match):
    root, d, _ = cifar10_bin
    p = d / "data_batch_3.bin"
    p.write_bytes(corrupt(p.read_bytes()))
    with pytest.raises(DataFormatError, match=match) as e:
        D.load_cifar10(root)
    assert str(p) in str(e.value)


def test_cifar100_binary(tmp_path):
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    for split in ("train", "test"):
        labels = np.stack([RNG.integers(0, 20, 4), RNG.integers(0, 100, 4)], axis=1).astype(np.uint8)
        pixels = RNG.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        (d / f"{split}.bin").write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    fine, coarse = D.load_cifar100(tmp_path), D.load_cifar100(tmp_path, label_mode="coarse")
    raw = np.frombuffer((d / "test.bin").read_bytes(), np.uint8).reshape(4, -1)
    np.testing.assert_array_equal(fine["test"].y, raw[:, 1])
    np.testing.assert_array_equal(coarse["test"].y, raw[:, 0])
    blob = bytearray((d / "train.bin").read_bytes())
    blob[3074 * 2 + 1] = 100  # fine label of record 2
    (d / "train.bin").write_bytes(bytes(blob))
    with pytest.raises(DataFormatError, match="train.bin: mislabelled: record 2 has label 100, expected 0..99"):
        D.load_cifar100(tmp_path)
    with pytest.raises(ValueError, match="label_mode"):
        D.load_cifar100(tmp_path, label_mode="both")


# ---------------------------------------------------------------- CIFAR python (restricted unpickler)

class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 str opcodes (BINSTRING), as the original CIFAR files (cPickle,
    protocol 2) were written: read back with encoding="bytes", every string is bytes, numpy's too."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n])) if n < 256 else (pickle.BINSTRING + struct.pack("<i", n)))
        self.write(obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_dumps(obj):
    import io
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    # numpy 1.x (which wrote the originals) named the reconstructor numpy.core.multiarray
    blob = f.getvalue().replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
    assert b"numpy.core.multiarray" in blob or b"ndarray" not in blob
    return blob


def cifar_py_batch(n, py2=True):
    x = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    y = RNG.integers(0, 10, n).tolist()
    if py2:
        return x, y, py2_dumps({b"batch_label": b"training batch", b"labels": y, b"data": x,
                                b"filenames": [b"img%d.png" % i for i in range(n)]})
    return x, y, pickle.dumps({"batch_label": "training batch", "labels": y, "data": x,
                               "filenames": [f"img{i}.png" for i in range(n)]}, protocol=4)


@pytest.fixture(params=["py2", "py3"])
def cifar10_py(tmp_path, request):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    truth = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x, y, blob = cifar_py_batch(2, py2=request.param == "py2")
        (d / name).write_bytes(blob)
        truth.append((x, y))
    meta = {b"label_names": [c.encode() for c in D.datasets.CIFAR10_CLASSES], b"num_vis": 3072}
    (d / "batches.meta").write_bytes(py2_dumps(meta))
    return tmp_path, d, truth


def test_cifar10_python_reads(cifar10_py):
    root, d, truth = cifar10_py
    s = D.load_cifar10(root, dtype=np.uint8)  # auto: no .bin files, so the python format
    np.testing.assert_array_equal(s["train"].x.reshape(10, -1), np.concatenate([x for x, _ in truth[:5]]))
    np.testing.assert_array_equal(s["test"].y, truth[5][1])
    assert s["train"].classes[-1] == "truck"
    meta = D.read_cifar_pickle(d / "batches.meta")
    assert meta["num_vis"] == 3072 and meta["label_names"][0] == "airplane"


def test_cifar10_python_corrupt(cifar10_py):
    root, d, _ = cifar10_py
    p = d / "data_batch_2"
    good = p.read_bytes()
    p.write_bytes(good[:len(good) // 2])
    with pytest.raises(DataFormatError, match="data_batch_2: truncated or corrupt pickle"):
        D.load_cifar10(root)
    x, _, _ = cifar_py_batch(2)
    p.write_bytes(pickle.dumps({"data": x, "labels": [3, 12]}, protocol=4))
    with pytest.raises(DataFormatError, match="data_batch_2: mislabelled: entry 1 has label 12"):
        D.load_cifar10(root)
    p.write_bytes(pickle.dumps({"data": x[:, :100], "labels": [3, 1]}, protocol=4))
    with pytest.raises(DataFormatError, match=r"'data' must be a uint8 array \(N, 3072\)"):
        D.load_cifar10(root)
    p.write_bytes(pickle.dumps({"data": x, "labels": [1, 2], "extra": 1.5}, protocol=4))
    with pytest.raises(DataFormatError, match=r"value of type float at top level\['extra'\]"):
        D.load_cifar10(root)


class RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class RunsEval:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (eval, (f"open({str(self.path)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [RunsCode, RunsEval])
def test_restricted_unpickler_refuses_code(tmp_path, payload):
    sentinel = tmp_path / "pwned"
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({"data": payload(sentinel), "labels": [0]}, protocol=2))
    # the payload really would run under plain pickle (checked in a throwaway copy of the idea)
    with pytest.raises(DataFormatError, match=r"unsafe pickle: refused global ((posix|nt|os)\.system|"
                                              r"(__builtin__|builtins)\.eval): only numpy arrays"):
        D.read_cifar_pickle(p)
    assert not sentinel.exists()
    pickle.loads(p.read_bytes())  # control: the unrestricted unpickler does run it
    assert sentinel.exists()


def test_restricted_unpickler_refuses_other_numpy_globals(tmp_path):
    p = tmp_path / "b"
    p.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8)}, protocol=5))  # uses _frombuffer
    with pytest.raises(DataFormatError, match=r"refused global numpy\._core\.numeric\._frombuffer|"
                                              r"refused global numpy\.core\.numeric\._frombuffer"):
        D.read_cifar_pickle(p)


def _op_str(s):
    b = s.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(b)]) + b


def _op_dtype(name, state=None):
    """numpy.dtype(name, False, True), then BUILD with `state` if given: the opcodes numpy's own pickles use."""
    out = (pickle.GLOBAL + b"numpy\ndtype\n" + _op_str(name) + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3
           + pickle.REDUCE)
    return out if state is None else out + state + pickle.BUILD


def _op_array(dtype_ops, shape, raw):
    """_reconstruct(ndarray, (0,), b"b"), then BUILD with (1, shape, dtype, False, raw)."""
    ints = b"".join(pickle.BININT1 + bytes([n]) for n in shape)
    return (pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + pickle.GLOBAL + b"numpy\nndarray\n"
            + pickle.BININT1 + b"\0" + pickle.TUPLE1 + pickle.SHORT_BINBYTES + b"\1b" + pickle.TUPLE3 + pickle.REDUCE
            + pickle.MARK + pickle.BININT1 + b"\1" + pickle.MARK + ints + pickle.TUPLE + dtype_ops + pickle.NEWFALSE
            + pickle.SHORT_BINBYTES + bytes([len(raw)]) + raw + pickle.TUPLE + pickle.BUILD)


def _forged_state(field):
    """The dtype state (3, "|", None, ("a",), {"a": (dtype(field), 0)}, 8, 1, 1): a structured dtype. With
    field "O" its one field is an object pointer, so the 8 raw bytes of the array would be read as a PyObject*
    (numpy segfaults freeing it)."""
    return (pickle.MARK + pickle.BININT1 + b"\3" + _op_str("|") + pickle.NONE + _op_str("a") + pickle.TUPLE1
            + pickle.EMPTY_DICT + _op_str("a") + _op_dtype(field) + pickle.BININT1 + b"\0" + pickle.TUPLE2
            + pickle.SETITEM + pickle.BININT1 + b"\x08" + pickle.BININT1 + b"\1" + pickle.BININT1 + b"\1"
            + pickle.TUPLE)


@pytest.mark.parametrize("array_ops,match", [
    (_op_array(_op_dtype("V8", _forged_state("O")), (1,), b"AAAAAAAA"),
     r"unsafe pickle: refused dtype 'V8': only numeric arrays"),
    (_op_array(_op_dtype("u1", _forged_state("u1")), (1,), b"AAAAAAAA"),
     r"unsafe pickle: refused dtype state \(3, '\|', None, \('a',\), \{'a': \(dtype\('uint8'\), 0\)\}, 8, 1, 1\): "
     r"only the state of a plain numeric dtype"),
    (_op_array(_op_dtype("O"), (1,), b"AAAAAAAA"), r"unsafe pickle: refused dtype 'O': only numeric arrays"),
    (_op_array(_op_dtype("u1"), (2, 3), b"AAAAA"),
     r"truncated or corrupt pickle .*array of shape \(2, 3\) and dtype uint8 needs 6 bytes, got 5"),
], ids=["object field forged on V8", "fields forged on u1", "object dtype", "short data"])
def test_restricted_unpickler_never_lets_the_file_build_a_dtype(tmp_path, run_isolated, array_ops, match):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.PROTO + b"\2" + pickle.EMPTY_DICT + _op_str("data") + array_ops + pickle.SETITEM + pickle.STOP)
    isolated_error(run_isolated, "D.read_cifar_pickle", p, match)  # in a child process: a segfault fails


def test_restricted_unpickler_builds_numeric_arrays_itself(tmp_path):
    p = tmp_path / "b"
    x = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    arrays = {"u8": np.arange(6, dtype=np.uint8).reshape(2, 3), "i4be": x, "f8": np.linspace(0, 1, 5),
              "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)), "empty": np.zeros((0, 3))}
    p.write_bytes(pickle.dumps(arrays, protocol=4))
    got = D.read_cifar_pickle(p)
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype.newbyteorder("=") and got[k].shape == a.shape, k  # native order, as numpy
        np.testing.assert_array_equal(got[k], a)
    assert got["fortran"].flags.f_contiguous and got["u8"].flags.writeable
    p.write_bytes(py2_dumps({b"data": arrays["u8"]}))  # numpy 1.x under Python 2: names as byte strings
    np.testing.assert_array_equal(D.read_cifar_pickle(p)["data"], arrays["u8"])


def test_restricted_unpickler_refuses_arrays_sharing_their_bytes(tmp_path):
    # one 3 KB string backing 1,000 arrays would become 3 MB: more array bytes than the file holds
    p = tmp_path / "b"
    raw = pickle.SHORT_BINBYTES + b"\xff" + bytes(255) + pickle.MEMOIZE
    one = _op_array(_op_dtype("u1"), (255,), bytes(255))
    blob = one.replace(pickle.SHORT_BINBYTES + b"\xff" + bytes(255), raw)
    again = one.replace(pickle.SHORT_BINBYTES + b"\xff" + bytes(255), pickle.BINGET + b"\0")
    p.write_bytes(pickle.PROTO + b"\2" + pickle.MARK + blob + again * 1000 + pickle.LIST + pickle.STOP)
    with pytest.raises(DataFormatError, match=r"b: unsafe pickle: the arrays up to top level\[\d+\] hold \d+ bytes, "
                                              r"more than the file's \d+ \(arrays sharing their data are refused\)"):
        D.read_cifar_pickle(p)


def _nested_lists(n):
    return pickle.PROTO + b"\2" + pickle.EMPTY_LIST * n + pickle.APPEND * (n - 1) + pickle.STOP


def test_restricted_unpickler_bounds_the_walk(tmp_path, run_isolated, monkeypatch):
    p = tmp_path / "b"
    shared = []
    for _ in range(60):
        shared = [shared, shared]  # 2**60 paths through 60 lists
    p.write_bytes(pickle.dumps(shared, protocol=4))
    assert len(p.read_bytes()) < 400
    isolated_error(run_isolated, "D.read_cifar_pickle", p,
                   r"unsafe pickle: nested deeper than 16 levels at top level(\[0\]){16}$", timeout=60)
    p.write_bytes(pickle.dumps([[1, 2]] * 2, protocol=4))  # one list twice: the same object
    with pytest.raises(DataFormatError, match=r"unsafe pickle: the list at top level\[1\] is also reached from "
                                              r"elsewhere \(shared or cyclic containers are refused\)"):
        D.read_cifar_pickle(p)
    cyclic = []
    cyclic.append({"a": cyclic})
    p.write_bytes(pickle.dumps(cyclic, protocol=2))
    with pytest.raises(DataFormatError, match=r"the list at top level\[0\]\['a'\] is also reached from elsewhere"):
        D.read_cifar_pickle(p)
    p.write_bytes(_nested_lists(200_000))
    with pytest.raises(DataFormatError, match=r"b: unsafe pickle: nested deeper than 16 levels at top level\[0\]"):
        D.read_cifar_pickle(p)
    p.write_bytes(_nested_lists(16))  # at the limit: fine
    got = D.read_cifar_pickle(p)
    for _ in range(15):
        got = got[0]
    assert got == []
    monkeypatch.setattr(D.cifar_pickle, "_MAX_ITEMS", 10)  # the entry cap (2**24) made small
    p.write_bytes(pickle.dumps({"a": list(range(4)), "b": list(range(4))}, protocol=4))
    assert D.read_cifar_pickle(p) == {"a": [0, 1, 2, 3], "b": [0, 1, 2, 3]}  # 2 + 4 + 4 entries: at the cap
    p.write_bytes(pickle.dumps({"a": list(range(5)), "b": list(range(4))}, protocol=4))
    with pytest.raises(DataFormatError, match=r"b: unsafe pickle: more than 10 list and dict entries"):
        D.read_cifar_pickle(p)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST IDX

def idx_bytes(arr, magic_type=0x08):
    head = bytes([0, 0, magic_type, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.fixture(params=[False, True], ids=["raw", "gz"])
def mnist_dir(tmp_path, request):
    gz = request.param
    truth = {}
    for stem, n in (("train", 5), ("t10k", 3)):
        x = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = RNG.integers(0, 10, n).astype(np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = tmp_path / (f"{stem}-{kind}-ubyte" + (".gz" if gz else ""))
            blob = idx_bytes(arr)
            name.write_bytes(gzip.compress(blob) if gz else blob)
        truth[stem] = (x, y)
    return tmp_path, gz, truth


def test_mnist_reads(mnist_dir):
    root, _, truth = mnist_dir
    s = D.load_mnist(root, dtype=np.uint8)
    np.testing.assert_array_equal(s["train"].x[:, 0], truth["train"][0])
    np.testing.assert_array_equal(s["test"].y, truth["t10k"][1])
    f = D.load_fashion_mnist(root)
    assert f["train"].x.dtype == np.float32 and f["train"].classes[-1] == "Ankle boot"
    np.testing.assert_allclose(f["test"].x[:, 0], truth["t10k"][0] / 255.0, rtol=1e-6)


def _rewrite(path, gz, fn):
    blob = path.read_bytes()
    blob = gzip.decompress(blob) if gz else blob
    blob = fn(blob)
    path.write_bytes(gzip.compress(blob) if gz else blob)


@pytest.mark.parametrize("what,fn,match", [
    ("images", lambda b: b[:-10], r"truncated: header says shape \(5, 28, 28\) = 3920 bytes of data, file has 3910"),
    ("images", lambda b: b + b"\0", "trailing bytes"),
    ("images", lambda b: b"\0\0\x08\x01" + b[4:], "bad magic number 0x00000801, expected 0x00000803"),
    ("labels", lambda b: b"\x12\x34" + b[2:], "bad magic number 0x12340801, expected 0x00000801"),
    ("labels", lambda b: b[:8] + bytes([11]) + b[9:], "mislabelled: entry 0 has label 11"),
    ("labels", lambda b: idx_bytes(np.zeros(4, np.uint8)), "4 labels for 5 images"),
    ("labels", lambda b: b[:2], "truncated: 2 bytes, shorter than the 4-byte IDX magic number"),
])
def test_mnist_corrupt(mnist_dir, what, fn, match):
    root, gz, _ = mnist_dir
    p = root / (f"train-{what}-idx{3 if what == 'images' else 1}-ubyte" + (".gz" if gz else ""))
    _rewrite(p, gz, fn)
    with pytest.raises(DataFormatError, match=match) as e:
        D.load_mnist(root)
    assert os.fspath(p) in str(e.value)


def test_idx_truncated_gzip_and_other_types(tmp_path):
    p = tmp_path / "a.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))[:-12])
    with pytest.raises(DataFormatError, match="a.gz: truncated or corrupt gzip stream"):
        D.read_idx(p)
    q = tmp_path / "f.idx"
    arr = RNG.standard_normal((3, 4)).astype(np.float32)
    q.write_bytes(idx_bytes(arr, 0x0D))
    np.testing.assert_array_equal(D.read_idx(q), arr)
    q.write_bytes(b"\0\0\x07\x01\0\0\0\0")
    with pytest.raises(DataFormatError, match="not an IDX file"):
        D.read_idx(q)


ZEROS_MIB_GZ = gzip.compress(bytes(1 << 20))  # one gzip member: 1 MiB of zeros in about 1 KB
HEADROOM = 48 << 20  # address space a check of a small file may use: far less than the bombs inflate to


def test_idx_gz_reads_only_what_the_header_claims(tmp_path, run_isolated):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    # the header claims 2 images, the stream inflates to 256 MiB more (a gzip file may hold many members)
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28), np.uint8))) + ZEROS_MIB_GZ * 256)
    assert p.stat().st_size < 400_000
    isolated_error(run_isolated, "D.read_idx", p, r"trailing bytes: header says shape \(2, 28, 28\) = 1568 "
                                                  r"bytes of data, the gzip stream holds more",
                   memory_headroom=HEADROOM)
    # an honest header and 256 MiB of zeros: more than 100 times the compressed size is refused before reading
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 4096, 256, 256)) + ZEROS_MIB_GZ * 256)
    isolated_error(run_isolated, "D.read_idx", p, r"header says shape \(4096, 256, 256\) = 268435456 bytes of "
                                                  rf"data, more than 100 times the {p.stat().st_size} bytes of the "
                                                  r"compressed file \(refused as a decompression bomb\)",
                   memory_headroom=HEADROOM)


def _npz_with(tmp_path, x_member, compress=zipfile.ZIP_STORED):
    import io
    p = tmp_path / "d.npz"
    y = io.BytesIO()
    np.lib.format.write_array(y, np.zeros(4, np.int64))
    with zipfile.ZipFile(p, "w", compression=compress) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            x_member(f)
        z.writestr("y.npy", y.getvalue())
    return p


def test_npz_member_size_is_checked_before_reading(tmp_path, run_isolated):
    def claims_4tib(f):
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (1 << 42,)})
        f.write(bytes(16))
    p = _npz_with(tmp_path, claims_4tib)
    isolated_error(run_isolated, "D.load_npz", p, r"d\.npz: member x\.npy: header says shape \(4398046511104,\) "
                                                  r"uint8 = 4398046511104 bytes of data, the member holds 16",
                   memory_headroom=HEADROOM)

    def zeros_64mib(f):
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (4, 4096, 4096)})
        for _ in range(64):
            f.write(bytes(1 << 20))
    p = _npz_with(tmp_path, zeros_64mib, zipfile.ZIP_DEFLATED)
    packed = zipfile.ZipFile(p).getinfo("x.npy").compress_size
    isolated_error(run_isolated, "D.load_npz", p, r"d\.npz: member x\.npy: header says shape \(4, 4096, 4096\) "
                                                  rf"uint8 = 67108864 bytes of data, more than 100 times the {packed} "
                                                  r"compressed bytes \(refused as a decompression bomb\)",
                   memory_headroom=HEADROOM)


# ---------------------------------------------------------------- image folders

def test_image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    truth = []
    for label, cls in enumerate(["cat", "dog"]):
        (tmp_path / cls).mkdir()
        for i in range(3):
            a = RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / cls / f"{i}.png")
            truth.append((a, label))
    ds = D.load_image_folder(tmp_path, dtype=np.uint8)
    assert ds.classes == ["cat", "dog"] and ds.x.shape == (6, 3, 6, 5)
    for k, (a, label) in enumerate(truth):
        np.testing.assert_array_equal(ds.x[k], a.transpose(2, 0, 1))
        assert ds.y[k] == label
    assert D.load_image_folder(tmp_path, mode="L", size=(4, 4)).x.shape == (6, 1, 4, 4)
    Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(tmp_path / "dog" / "3.png")
    with pytest.raises(DataFormatError, match=r"3\.png: image is 7x5 but .*0\.png is 6x5; pass size"):
        D.load_image_folder(tmp_path)
    (tmp_path / "dog" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataFormatError, match=r"3\.png: unreadable or corrupt image"):
        D.load_image_folder(tmp_path)
    good = (tmp_path / "dog" / "0.png").read_bytes()
    (tmp_path / "dog" / "3.png").write_bytes(good[:len(good) // 2])  # truncated PNG
    with pytest.raises(DataFormatError, match=r"3\.png: unreadable or corrupt image"):
        D.load_image_folder(tmp_path)


def test_image_folder_without_pillow_says_how_to_get_it(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(ImportError, match=r"needs Pillow, an optional dependency: pip install 'cnnkit\[images\]'"):
        D.load_image_folder(tmp_path)


# ---------------------------------------------------------------- numpy arrays and .npz

def test_npz_and_arrays(tmp_path):
    x = RNG.integers(0, 256, size=(4, 5, 5, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 1])
    p = tmp_path / "d.npz"
    np.savez_compressed(p, images=x, labels=y)
    ds = D.load_npz(p, x_key="images", y_key="labels", layout="NHWC")
    assert ds.x.shape == (4, 3, 5, 5) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x, x.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)
    with pytest.raises(DataFormatError, match=r"d\.npz: missing array\(s\) \['x', 'y'\]"):
        D.load_npz(p)
    blob = p.read_bytes()
    p.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(DataFormatError, match=r"d\.npz: truncated or corrupt \.npz"):
        D.load_npz(p, x_key="images", y_key="labels")
    np.savez(p, x=np.array([object()] * 4, dtype=object), y=y)
    with pytest.raises(DataFormatError, match=r"d\.npz: truncated or corrupt \.npz.*pickle"):
        D.load_npz(p)
    np.savez(p, x=np.zeros((4, 2, 2), np.float32), y=np.arange(3))
    with pytest.raises(DataFormatError, match=r"d\.npz: from_arrays: y must have shape \(4,\)"):
        D.load_npz(p)
    a = D.from_arrays(np.zeros((3, 4, 4), np.float64), np.arange(3), dtype=np.float64)
    assert a.x.shape == (3, 1, 4, 4) and a.x.dtype == np.float64
    with pytest.raises(TypeError, match="y must hold integer labels"):
        D.from_arrays(np.zeros((3, 4, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="layout"):
        D.from_arrays(np.zeros((3, 4, 4, 1)), np.arange(3), layout="HWC")
