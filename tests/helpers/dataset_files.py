"""Small dataset files in their real on-disk layouts, for the dataset tests (and the CLI's), and a runner
that checks a reader refuses a bad file in a child process."""
import gzip
import pickle
import re
import struct

import numpy as np


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


def cifar_records(n, label_bytes=1, max_label=10):
    labels = RNG.integers(0, max_label, size=(n, label_bytes), dtype=np.uint8)
    pixels = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return labels, pixels, np.concatenate([labels, pixels], axis=1).tobytes()


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


def idx_bytes(arr, magic_type=0x08):
    head = bytes([0, 0, magic_type, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


ZEROS_MIB_GZ = gzip.compress(bytes(1 << 20))  # one gzip member: 1 MiB of zeros in about 1 KB
HEADROOM = 48 << 20  # address space a check of a small file may use: far less than the bombs inflate to
