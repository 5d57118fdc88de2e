"""CIFAR-10 python batches and the restricted unpickler: real batches read, and every pickle that would run
code, build a dtype from the file or blow up the walk is refused with DataFormatError."""
import os
import pickle

import numpy as np
import pytest

from cnnkit import data as D
from cnnkit.data import DataFormatError
from helpers.dataset_files import cifar_py_batch, isolated_error, py2_dumps


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
