"""Every raw CUDA entry point of cnnkit._C checks its arguments before any CUDA call.

The `*_cuda` functions take device pointers as integers. Their checks (counts >= 0, shapes non-negative, no
null pointer for a non-empty buffer) run on the host before anything reaches the driver, so this file runs
on a machine without a GPU: each entry point is called with a negative count and with null pointers, in a
subprocess under a timeout, and must raise a ValueError that says what is wrong. A hang (a check that never
returns) fails the test by the timeout instead of stopping the suite.
"""
import json
import re
import subprocess
import sys

import pytest

import cnnkit
import cnnkit._C as _C

pytestmark = pytest.mark.skipif(not cnnkit.build_info()["cuda"], reason="cnnkit was built without CUDA")

ENTRY_POINTS = sorted(n for n in dir(_C) if n.endswith("_cuda"))
# Queries that take no buffer and no count: nothing to check.
NO_ARGUMENTS = {"grad_sumsq_workspace_cuda"}

# Integer arguments that are not device pointers, and the value each takes in a valid call.
COUNTS = {"n", "rows", "cols"}
SCALAR_INTS = {"dtype": 0, "stream": 0, "seed": 0, "offset": 0, "epoch": 0, "group": 0}
# Pointers that may be null (optional buffers): a null one is not an error.
NULLABLE = {"b", "records", "ctl", "max_exp_avg_sq", "momentum_buffer", "grad_avg"}
LISTS = {"x_shape": [1, 1, 4, 4], "w_shape": [1, 1, 3, 3], "dy_shape": [1, 1, 2, 2], "kernel": [2, 2],
         "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1],
         # one horizontal flip with p = 0.5: (kind 1, stream, parameters, P, Q, eigval, eigvec)
         "stages": [(1, 0, [0.5, 0, 0, 0, 0, 0], 4, 4, 0, 0)]}
# In each entry point, the argument made negative by the negative-size probe.
SHAPE_PROBE = {"x_shape", "dy_shape"}


def _split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [p for p in parts + [cur.strip()] if p]


def _signature(name):
    """[(argument, kind, has_default)] read off pybind11's docstring, kind one of int/float/bool/list."""
    first = getattr(_C, name).__doc__.strip().splitlines()[0]
    m = re.fullmatch(rf"{name}\((.*)\) -> .*", first)
    assert m, f"unexpected docstring for {name}: {first!r}"
    out = []
    for part in _split_top(m.group(1)):
        arg, _, rest = part.partition(":")
        typ, _, default = rest.partition("=")
        typ = typ.strip()
        if "Sequence" in typ or typ.startswith("list"):
            kind = "list"
        elif typ == "bool":
            kind = "bool"
        elif "SupportsFloat" in typ or typ == "float":
            kind = "float"
        elif "SupportsInt" in typ or typ == "int":
            kind = "int"
        else:
            raise AssertionError(f"{name}: unknown type {typ!r} for argument {arg!r}")
        out.append((arg.strip(), kind, bool(default.strip())))
    return out


def _valid_args(name):
    """Arguments that pass every check except that the required pointers are null."""
    args = {}
    for arg, kind, has_default in _signature(name):
        if has_default:
            continue
        if kind == "list":
            assert arg in LISTS, f"{name}: no test value for list argument {arg!r}"
            args[arg] = list(LISTS[arg])
        elif kind == "bool":
            args[arg] = False
        elif kind == "float":
            args[arg] = 0.0  # also momentum 0, so no momentum buffer is required
        elif arg in COUNTS:
            args[arg] = 4
        elif arg == "groups":  # conv2d's group count, or the optimizer control block's group count
            args[arg] = 1
        elif arg in SCALAR_INTS:
            args[arg] = SCALAR_INTS[arg]
        else:
            args[arg] = 0  # a device pointer
    return args


def _probes(name):
    """(label, kwargs, what the message must say) for each call the entry point must refuse."""
    valid = _valid_args(name)
    required_ptrs = [a for a, k, d in _signature(name)
                     if k == "int" and not d and a not in COUNTS | set(SCALAR_INTS) | NULLABLE | {"groups"}]
    probes = []
    if required_ptrs:
        probes.append(("null pointer", valid, "null device pointer"))
    sizes = [a for a in valid if a in COUNTS or (a == "groups" and "ctl" in valid and "x_shape" not in valid)]
    for a in sizes:
        probes.append((f"{a} = -1", dict(valid, **{a: -1}), "must be >= 0"))
    for a in SHAPE_PROBE & set(valid):
        bad = list(valid[a])
        bad[0] = -1
        probes.append((f"{a}[0] = -1", dict(valid, **{a: bad}), "non-negative|must be >= 0"))
    return probes


_RUNNER = r"""
import json, sys
import cnnkit._C as C
name, probes = json.loads(sys.argv[1])
out = []
for label, kwargs, _ in probes:
    try:
        getattr(C, name)(**kwargs)
        out.append([label, "returned", ""])
    except Exception as e:
        out.append([label, type(e).__name__, str(e)])
print(json.dumps(out))
"""


def test_the_entry_points_are_found():
    # The parametrized test below must not pass vacuously: a CUDA build has these entry points.
    for name in ("relu_fwd_cuda", "dropout_fwd_cuda", "sgd_step_cuda", "adam_step_cuda", "grad_sumsq_cuda",
                 "grad_scale_clamp_cuda", "conv2d_fwd_cuda", "maxpool2d_fwd_cuda", "aug_pipeline_cuda"):
        assert name in ENTRY_POINTS
    assert len(ENTRY_POINTS) >= 19


@pytest.mark.parametrize("name", [n for n in ENTRY_POINTS if n not in NO_ARGUMENTS])
def test_bad_counts_and_null_pointers_raise_without_a_gpu(name):
    probes = _probes(name)
    assert probes, f"{name}: no probe built"
    try:
        res = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps([name, probes])],
                             capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} hung (no answer in 30 s) on the probes {[p[0] for p in probes]}")
    assert res.returncode == 0, f"{name}: the probe process died (rc {res.returncode}): {res.stderr[-2000:]}"
    results = json.loads(res.stdout.strip().splitlines()[-1])
    for (label, _, pattern), (_, kind, message) in zip(probes, results):
        assert kind == "ValueError", f"{name} with {label}: expected ValueError, got {kind}: {message}"
        assert re.search(pattern, message), f"{name} with {label}: message {message!r} lacks {pattern!r}"
