"""The raw CUDA entry points of cnnkit._C (``*_cuda``) check their integer arguments on the host, before any
CUDA call: a negative count or shape, a null device pointer or a bad dtype code is a ValueError naming the
argument, never a hang, a crash or a kernel launched on garbage.

The entry points are enumerated from ``dir(cnnkit._C)`` and their arguments are built from the pybind11
signatures in the docstrings, so a new binding is covered (or makes this test fail until it is described
here). Each function runs in its own subprocess under a timeout, because a check that loops forever holds the
GIL and cannot be interrupted from Python. No GPU is needed: every call here must fail in the checks.
"""
import json
import os
import re
import subprocess
import sys

import pytest

import cnnkit
from cnnkit import _C

CUDA_BUILT = bool(cnnkit.build_info()["cuda"])
ENTRY_POINTS = sorted(n for n in dir(_C) if n.endswith("_cuda") and callable(getattr(_C, n)))

FAKE = 1 << 20  # a well-aligned, non-null fake device pointer; no call below gets far enough to use it
TIMEOUT = 20    # seconds per function (all its variants); the checks take microseconds

# Integer parameters that are not device pointers, and the valid value each gets.
COUNTS = {"n": 4, "rows": 2, "cols": 2, "groups": 1}
SCALARS = {"dtype": 0, "seed": 0, "offset": 0, "epoch": 0, "group": 0}
# Pointers where 0 means "absent" (or the default stream): always passed as 0, never expected to fail.
OPTIONAL_PTRS = {"stream", "b", "records", "ctl", "momentum_buffer", "grad_avg", "max_exp_avg_sq"}
REQUIRED_OVERRIDE = {("optim_ctl_finish_cuda", "ctl")}  # ctl is the whole point of this one
# Integer lists: shapes and (h, w) pairs, valid together for every op (conv 4x4 * 3x3 -> 2x2, pool 2x2).
SHAPES = {"x_shape": [1, 1, 4, 4], "w_shape": [1, 1, 3, 3], "dy_shape": [1, 1, 2, 2]}
PAIRS = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "kernel": [2, 2]}
# Untyped lists: the augmentation stages, here one horizontal flip (kind 1, p = 0.5) keeping the 4x4 plane.
LISTS = {"stages": [(1, 0, [0.5, 0.0, 0.0, 0.0, 0.0, 0.0], 4, 4, 0, 0)]}


def _top_level(s):
    """(index, character) for each character of `s` outside brackets and quotes."""
    depth, quote = 0, None
    for i, ch in enumerate(s):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif depth == 0:
            yield i, ch


def _split_top(s):
    """Split `s` at commas outside brackets and quotes."""
    cuts = [i for i, ch in _top_level(s) if ch == ","]
    parts = [s[a + 1:b].strip() for a, b in zip([-1] + cuts, cuts + [len(s)])]
    return [p for p in parts if p]


def _unwrap(t):
    """`typing.Annotated[X, ...]` -> X (pybind11 3 wraps fixed-size arrays so)."""
    t = t.strip()
    m = re.fullmatch(r"(?:typing\.)?Annotated\[(.*)\]", t)
    return _unwrap(_split_top(m.group(1))[0]) if m else t


def _kind(t):
    """'int', 'float', 'bool', 'intlist' or 'list' for a pybind11 type string (2.x or 3.x spelling)."""
    t = _unwrap(t)
    m = re.fullmatch(r"(?:collections\.abc\.Sequence|typing\.Sequence|typing\.List|List|list|"
                     r"collections\.abc\.MutableSequence)\[(.*)\]", t)
    if m:
        inner = _kind(m.group(1))
        return "intlist" if inner == "int" else "list"
    if t in ("list", "typing.List", "collections.abc.Sequence"):
        return "list"
    alts = {a.strip() for a in t.split("|")}
    if alts <= {"bool", "typing.SupportsBool"}:
        return "bool"
    # A float renders as "typing.SupportsFloat | typing.SupportsIndex" in pybind11 3: test float first.
    if alts & {"float", "typing.SupportsFloat", "SupportsFloat"}:
        return "float"
    if alts & {"int", "typing.SupportsInt", "typing.SupportsIndex", "SupportsInt", "SupportsIndex"}:
        return "int"
    raise AssertionError(f"unknown pybind11 parameter type {t!r}")


def signature(name):
    """[(param, kind)] from the first line of the binding's docstring."""
    doc = getattr(_C, name).__doc__ or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    m = re.fullmatch(rf"{re.escape(name)}\((.*)\)\s*->\s*.+", first)
    assert m, f"{name}: cannot read the signature from its docstring {first!r}"
    params = []
    for p in _split_top(m.group(1)):
        pname, _, rest = p.partition(":")
        params.append((pname.strip(), _kind(_drop_default(rest))))
    return params


def _drop_default(t):
    """'type = default' -> 'type' (an '=' inside brackets or quotes belongs to the type)."""
    return next((t[:i] for i, ch in _top_level(t) if ch == "="), t)


def _role(fn, pname, kind):
    if kind == "int":
        if pname in COUNTS:
            return "count"
        if pname in SCALARS:
            return "scalar"
        if pname in OPTIONAL_PTRS and (fn, pname) not in REQUIRED_OVERRIDE:
            return "optional_ptr"
        return "ptr"
    if kind == "intlist":
        assert pname in SHAPES or pname in PAIRS, f"{fn}: no value for the int list {pname!r}; add it to SHAPES/PAIRS"
        return "shape" if pname in SHAPES else "pair"
    if kind == "list":
        assert pname in LISTS, f"{fn}: no value for the list {pname!r}; add it to LISTS"
        return "list"
    return kind


def base_args(fn, params):
    args = {}
    for pname, kind in params:
        role = _role(fn, pname, kind)
        args[pname] = {"count": COUNTS.get(pname), "scalar": SCALARS.get(pname), "optional_ptr": 0, "ptr": FAKE,
                       "shape": SHAPES.get(pname), "pair": PAIRS.get(pname), "list": LISTS.get(pname),
                       "float": 0.0, "bool": False}[role]
    return args


def variants(fn):
    """[(label, args, words that the ValueError must contain)]: one bad argument each."""
    params = signature(fn)
    base = base_args(fn, params)
    out = []
    for pname, kind in params:
        role = _role(fn, pname, kind)
        if role == "ptr":
            out.append((f"{pname}=0", dict(base, **{pname: 0}), [pname, "null"]))
        elif role == "count":
            out.append((f"{pname}=-1", dict(base, **{pname: -1}), [pname, "-1"]))
        elif role == "shape":
            bad = [-1] + list(base[pname][1:])
            out.append((f"{pname}[0]=-1", dict(base, **{pname: bad}), [pname.replace("_shape", ""), "-1"]))
        elif pname == "dtype":
            out.append(("dtype=7", dict(base, dtype=7), ["dtype", "7"]))
    return [(label, [a[p] for p, _ in params], words) for label, a, words in out]


RUNNER = r"""
import json, sys
import cnnkit._C as C
fn = getattr(C, sys.argv[1])
for label, args in json.loads(sys.argv[2]):
    # JSON turns the stage tuples into lists; the binding casts each stage to a tuple, so restore them.
    args = [[tuple(s) for s in a] if isinstance(a, list) and a and isinstance(a[0], list) else a for a in args]
    print(json.dumps(["start", label]), flush=True)
    try:
        r = fn(*args)
        res = ["returned", repr(r)]
    except Exception as e:
        res = [type(e).__name__, str(e)]
    print(json.dumps(["done", label] + res), flush=True)
"""


def run_variants(fn, cases):
    payload = json.dumps([(label, args) for label, args, _ in cases])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-c", RUNNER, fn, payload], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("[")]
        started = [ln[1] for ln in lines if ln[0] == "start"]
        pytest.fail(f"{fn}({started[-1] if started else '?'}) did not return within {TIMEOUT} s (a hang)")
    assert proc.returncode == 0, f"{fn}: the subprocess died (rc {proc.returncode}):\n{proc.stderr[-2000:]}"
    done = {ln[1]: ln[2:] for ln in map(json.loads, proc.stdout.splitlines()) if ln[0] == "done"}
    assert len(done) == len(cases), f"{fn}: only {len(done)} of {len(cases)} calls finished:\n{proc.stderr}"
    return done


def test_the_cuda_entry_points_are_found():
    if not CUDA_BUILT:
        pytest.skip("cnnkit was built without CUDA: there are no *_cuda entry points")
    assert ENTRY_POINTS, "build_info()['cuda'] is True but dir(cnnkit._C) has no *_cuda entry point"
    for name in ("relu_fwd_cuda", "dropout_fwd_cuda", "conv2d_fwd_cuda", "adam_step_cuda", "grad_sumsq_cuda",
                 "aug_pipeline_cuda"):
        assert name in ENTRY_POINTS


def test_signature_parser_reads_pybind11_2_and_3_spellings():
    assert _kind("typing.SupportsInt | typing.SupportsIndex") == "int"
    assert _kind("int") == "int"
    assert _kind("typing.SupportsFloat | float") == "float"
    assert _kind("typing.SupportsFloat | typing.SupportsIndex") == "float"
    assert _kind("float") == "float"
    assert _kind("bool") == "bool"
    assert _kind("collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]") == "intlist"
    assert _kind("list[int]") == "intlist"
    assert _kind('typing.Annotated[collections.abc.Sequence[typing.SupportsInt], "FixedSize(2)"]') == "intlist"
    assert _kind("typing.Annotated[list[int], FixedSize(2)]") == "intlist"
    assert _kind("list") == "list"
    with pytest.raises(AssertionError):
        _kind("numpy.ndarray")


@pytest.mark.skipif(not CUDA_BUILT, reason="cnnkit was built without CUDA")
@pytest.mark.parametrize("fn", ENTRY_POINTS)
def test_bad_integer_arguments_raise_value_error_before_any_cuda_call(fn):
    cases = variants(fn)
    if not cases:
        # Nothing to get wrong (grad_sumsq_workspace_cuda): it must still return, on any machine.
        done = run_variants(fn, [("no arguments", [], [])])
        assert done["no arguments"][0] == "returned", f"{fn}(): {done['no arguments']}"
        return
    done = run_variants(fn, cases)
    for label, _, words in cases:
        kind, msg = done[label]
        assert kind == "ValueError", f"{fn}({label}) should raise ValueError, got {kind}: {msg}"
        for w in words:
            assert w in msg, f"{fn}({label}): the message should name {w!r}, got {msg!r}"
