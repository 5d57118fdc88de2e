# ck.profiler: ranges nest (a layer's forward holds its kernel calls), the counts of a 2-step loop are the known
# numbers of calls, self time is the range less its children, the kernels' floating-point operations equal
# torch.utils.flop_counter's count for the same net, the Chrome trace parses with every event inside its parent,
# table() sorts, nothing is recorded outside a profile, profiles do not nest, and `cnnkit train --profile`
# writes profile.txt and trace.json.
import json
import os
import subprocess
import sys
import itertools
import threading

import numpy as np
import pytest

import cnnkit as ck
import cnnkit.functional as F
from helpers import fakecupy

from cnnkit import config as ck_config
from cnnkit import profiler

N_CONV, N_LINEAR = 2, 2


def _net():
    return ck.Sequential(ck.Conv2d(1, 8, 3, padding=1, seed=1), ck.ReLU(), ck.Conv2d(8, 8, 3, padding=1, seed=2),
                         ck.ReLU(), ck.MaxPool2d(2), ck.Flatten(), ck.Linear(8 * 4 * 4, 16, seed=3), ck.ReLU(),
                         ck.Linear(16, 10, seed=4))


def _train(model, opt, batches):
    for x, y in batches:
        with ck.profiler.record_function("step"):
            opt.zero_grad()
            loss, d = ck.losses.softmax_cross_entropy(model(x), y)
            model.backward(d)
            opt.step()


def _digits_loader(prefetch):
    return ck.data.DataLoader(ck.data.load_digits()["train"], 16, shuffle=True, seed=0, prefetch=prefetch)


def _profile_two_steps(prefetch=False):
    model = _net()
    opt = ck.optim.Adam(model.parameters(), lr=1e-3)
    loader = _digits_loader(prefetch)
    with ck.profiler.profile() as prof:
        _train(model, opt, itertools.islice(loader, 2))
    return prof


def _rows(prof):
    return {r.name: r for r in prof.key_averages()}


def _tree(events):
    """Per thread, each event's parent (the innermost event holding it), from the intervals alone; asserts that
    the intervals nest (no two overlap without one holding the other)."""
    parent = {}
    by_thread = {}
    for i, e in enumerate(events):
        by_thread.setdefault(e["thread"], []).append(i)
    for ids in by_thread.values():
        ids.sort(key=lambda i: (events[i]["start_ns"], -events[i]["duration_ns"]))
        stack = []
        for i in ids:
            s, d = events[i]["start_ns"], events[i]["duration_ns"]
            while stack and events[stack[-1]]["start_ns"] + events[stack[-1]]["duration_ns"] <= s:
                stack.pop()
            if stack:
                top = events[stack[-1]]
                assert s + d <= top["start_ns"] + top["duration_ns"], (events[i], top)
                parent[i] = stack[-1]
            stack.append(i)
    return parent


# ---------------------------------------------------------------- nesting, counts, self time

def test_a_layer_forward_holds_its_kernel_calls():
    prof = _profile_two_steps()
    events = prof.events()
    parent = _tree(events)
    names = [e["name"] for e in events]
    for i, n in enumerate(names):
        if n == "conv2d_fwd":
            assert names[parent[i]] == "Conv2d.forward"
            assert names[parent[parent[i]]] == "Sequential.forward"
            assert names[parent[parent[parent[i]]]] == "step"
        if n == "conv2d_bwd_weight":
            assert names[parent[i]] == "Conv2d.backward"
        if n == "adam_step":
            assert names[parent[i]] == "Adam.step"
    rows = _rows(prof)
    conv = rows["Conv2d.forward"]
    assert 0 < conv.self_time < conv.total_time
    assert conv.total_time >= rows["conv2d_fwd"].total_time
    assert rows["Sequential.backward"].self_time < rows["Sequential.backward"].total_time
    # self time is each range less the ranges directly inside it
    children = {}
    for i, p in parent.items():
        children[p] = children.get(p, 0) + events[i]["duration_ns"]
    for i, e in enumerate(events):
        assert e["self_ns"] == e["duration_ns"] - children.get(i, 0)
        assert e["self_ns"] >= 0


def test_counts_of_a_two_step_loop_are_the_calls_made():
    rows = _rows(_profile_two_steps())
    steps = 2
    want = {
        "step": steps, "DataLoader.batch": steps, "Adam.step": steps,
        "Sequential.forward": steps, "Sequential.backward": steps,
        "Conv2d.forward": steps * N_CONV, "Conv2d.backward": steps * N_CONV,
        "Linear.forward": steps * N_LINEAR, "Linear.backward": steps * N_LINEAR,
        "ReLU.forward": steps * 3, "MaxPool2d.forward": steps, "Flatten.forward": steps,
        "conv2d_fwd": steps * N_CONV, "conv2d_bwd_weight": steps * N_CONV, "conv2d_bwd_bias": steps * N_CONV,
        "conv2d_bwd_data": steps * (N_CONV - 1),   # the model's input gradient is not computed
        "matmul": steps * N_LINEAR * 3,            # y = x w^T; dw += dy^T x; dx = dy w
        "maxpool2d_fwd": steps, "maxpool2d_bwd": steps,
    }
    assert {n: rows[n].calls for n in want} == want
    total_self = sum(r.self_time for r in rows.values())
    assert sum(r.self_percent for r in rows.values()) == pytest.approx(100.0)
    for r in rows.values():
        assert r.avg_time == r.total_time / r.calls
        assert r.self_percent == pytest.approx(100.0 * r.self_time / total_self)


def test_kernel_flops_equal_torch_flop_counter():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode
    nn = torch.nn
    theirs = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 16), nn.ReLU(), nn.Linear(16, 10))
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = np.arange(16) % 10
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    model = _net()
    with ck.profiler.profile() as prof:
        _, d = ck.losses.softmax_cross_entropy(model(x), y)
        model.backward(d)
    rows = _rows(prof)
    kernel_flops = sum(r.flops for r in rows.values() if r.category == "kernel" and r.flops is not None)
    assert kernel_flops == fc.get_total_flops()
    assert rows["conv2d_fwd"].gflops == rows["conv2d_fwd"].flops / rows["conv2d_fwd"].total_time / 1e9
    # a layer's forward row counts what its flops() says (the bias add included), its backward the kernels'
    conv_layers = [layer for layer in model.children() if isinstance(layer, ck.Conv2d)]
    assert rows["Conv2d.forward"].flops == sum(
        layer.flops(None, (16, 8, 8, 8)) for layer in conv_layers)
    assert rows["Conv2d.backward"].flops == rows["conv2d_bwd_weight"].flops + rows["conv2d_bwd_data"].flops


def test_a_module_with_functional_ops_is_profiled():
    class Net(ck.Module):
        def __init__(self):
            super().__init__()
            self.conv = ck.nn.Conv2d(1, 4, 3, padding=1, seed=0)
            self.fc = ck.nn.Linear(4 * 4 * 4, 10, seed=1)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv(x)), 2)
            return F.linear(F.flatten(x, 1), self.fc.weight, self.fc.bias)

    model = Net()
    criterion = ck.nn.CrossEntropyLoss()
    x = np.random.default_rng(1).standard_normal((8, 1, 8, 8)).astype(np.float32)
    y = np.arange(8) % 10
    with ck.profiler.profile() as prof:
        for _ in range(2):
            criterion(model(x), y).backward()
    events = prof.events()
    parent = _tree(events)
    rows = _rows(prof)
    for name in ("Net.forward", "Conv2d.forward", "ReLU.forward", "MaxPool2d.forward", "F.flatten.forward",
                 "F.linear.forward", "autograd.backward", "Conv2d.backward", "ReLU.backward", "MaxPool2d.backward",
                 "F.flatten.backward", "F.linear.backward"):
        assert rows[name].calls == 2, name
    for i, e in enumerate(events):
        if e["name"] == "F.linear.forward":
            assert events[parent[i]]["name"] == "Net.forward"
        if e["name"] == "F.linear.backward":
            assert events[parent[i]]["name"] == "autograd.backward"
            assert [events[j]["name"] for j, p in parent.items() if p == i] == ["matmul", "matmul"]
    assert rows["F.linear.forward"].flops == 2 * (2 * 8 * 64 * 10)   # both calls: y = x w^T


class _FailingLayer(ck.Layer):
    """Runs a kernel, then fails: the ranges it opened must close."""

    def forward(self, x):
        ck.ops.relu_fwd(x)
        raise RuntimeError("failing layer")


def test_an_error_inside_a_layer_leaves_the_ranges_consistent():
    bad = ck.Sequential(ck.Conv2d(1, 4, 3, padding=1), _FailingLayer())
    model = _net()
    x = np.zeros((2, 1, 8, 8), np.float32)
    with ck.profiler.profile() as prof:
        with pytest.raises(RuntimeError, match="failing layer"):
            bad(x)
        model(x)
    events = prof.events()
    parent = _tree(events)
    names = [e["name"] for e in events]
    rows = _rows(prof)
    assert rows["Sequential.forward"].calls == 2 and rows["_FailingLayer.forward"].calls == 1
    assert rows["Conv2d.forward"].calls == 1 + N_CONV
    i = names.index("relu_fwd")
    assert names[parent[i]] == "_FailingLayer.forward" and names[parent[parent[i]]] == "Sequential.forward"
    top = [names[i] for i in range(len(events)) if i not in parent]
    assert top == ["Sequential.forward", "Sequential.forward"]   # the second call is not inside the first


def test_kernels_on_a_device_are_recorded_through_the_cuda_module(monkeypatch):
    fcp = fakecupy.install(monkeypatch)   # the CuPy stand-in: ops._cuda routed to the CPU kernels
    model = _net().to("cuda")
    opt = ck.optim.Adam(model.parameters(), lr=1e-3)
    x = fcp.asarray(np.random.default_rng(2).standard_normal((4, 1, 8, 8)).astype(np.float32))
    y = np.arange(4) % 10
    with ck.profiler.profile() as prof:
        _train(model, opt, [(x, y)])
    rows = _rows(prof)
    assert rows["conv2d_fwd"].calls == N_CONV and rows["matmul"].calls == 3 * N_LINEAR
    assert rows["conv2d_fwd"].flops == 2 * 4 * 8 * 8 * 8 * (1 * 9 + 8 * 9)
    assert rows["Adam.step"].calls == 1 and "adam_step" in rows


# ---------------------------------------------------------------- the trace

def test_chrome_trace_parses_and_every_event_nests_in_its_parent(tmp_path):
    prof = _profile_two_steps(prefetch=True)
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    assert os.listdir(tmp_path) == ["trace.json"]   # written atomically: no temporary file left
    trace = json.loads(path.read_text())
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == len(prof.events())
    for e in xs:
        assert {"name", "cat", "ph", "ts", "dur", "pid", "tid", "args"} <= set(e)
        assert e["ts"] >= 0 and e["dur"] >= 0 and e["pid"] == os.getpid()
    # the trace's microseconds back to whole nanoseconds, then the same nesting check as on the events
    as_events = [{"thread": e["tid"], "start_ns": round(e["ts"] * 1000), "duration_ns": round(e["dur"] * 1000)}
                 for e in xs]
    parent = _tree(as_events)
    names = [e["name"] for e in xs]
    assert {names[p] for i, p in parent.items() if names[i] == "conv2d_fwd"} == {"Conv2d.forward"}
    # the loader's worker thread has its own row, named
    threads = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    batch_tids = {e["tid"] for e in xs if e["name"] == "DataLoader.batch"}
    assert batch_tids and all(threads[t].startswith("cnnkit-loader-") for t in batch_tids)
    assert threads[threading.get_ident()] == threading.current_thread().name
    assert all(e["tid"] == threading.get_ident() for e in xs if e["name"] == "Conv2d.forward")
    flops = [e for e in xs if e["name"] == "conv2d_fwd"]
    assert all(e["args"]["flops"] > 0 for e in flops)


def test_export_chrome_trace_checks_its_path():
    prof = _profile_two_steps()
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        prof.export_chrome_trace(3)


# ---------------------------------------------------------------- the table

def _table_names(text):
    lines = text.splitlines()
    body = lines[3:lines.index(lines[0], 3)]   # between the header's rule and the closing rule
    return [line.split()[0] for line in body]


@pytest.mark.parametrize("sort_by", ["self_time", "total_time", "calls", "avg_time"])
def test_table_sorts_by_the_column(sort_by):
    prof = _profile_two_steps()
    rows = prof.key_averages()
    names = _table_names(prof.table(sort_by=sort_by, row_limit=5))
    assert names == [r.name for r in sorted(rows, key=lambda r: getattr(r, sort_by), reverse=True)][:5]
    assert len(_table_names(prof.table(row_limit=None))) == len(rows)
    assert _table_names(prof.table(sort_by="self_cpu_time_total", row_limit=-1)) == _table_names(
        prof.table(row_limit=None))   # torch's name for the column
    assert _table_names(prof.key_averages().table(sort_by="name", row_limit=None)) == sorted(r.name for r in rows)


def test_table_header_and_bad_arguments():
    prof = _profile_two_steps()
    head = prof.table().splitlines()[1].split()
    assert head == ["Name", "Calls", "Self", "time", "Total", "time", "Avg", "time", "Self", "%", "GFLOP/s"]
    with pytest.raises(ValueError, match=r"sort_by must be one of .*got 'speed'"):
        prof.table(sort_by="speed")
    with pytest.raises(ValueError, match="row_limit must be >= 1"):
        prof.table(row_limit=0)
    with pytest.raises(TypeError, match="row_limit must be an int or None, got str"):
        prof.table(row_limit="all")


# ---------------------------------------------------------------- disabled, nested

def test_nothing_is_recorded_outside_a_profile():
    assert profiler.active is None
    assert ck.ops._backend.kernels(np.zeros(1)) is ck._C   # the kernels are called directly
    model = _net()
    opt = ck.optim.Adam(model.parameters(), lr=1e-3)
    with ck.profiler.profile() as prof:
        pass
    assert profiler.active is None
    with ck.profiler.record_function("outside"):
        _train(model, opt, itertools.islice(_digits_loader(False), 2))
    assert prof.events() == [] and prof.key_averages() == []
    assert prof.wall_time >= 0


def test_record_function_as_a_decorator_on_several_threads():
    @ck.profiler.record_function("work")
    def work():
        ck.ops.relu_fwd(np.ones(8, np.float32))

    together = threading.Barrier(3)   # all three alive at once, so their thread ids differ

    def run():
        together.wait()
        for _ in range(20):
            work()
        together.wait()

    with ck.profiler.profile() as prof:
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        work()
    events = prof.events()
    parent = _tree(events)
    rows = _rows(prof)
    assert rows["work"].calls == 61 and rows["relu_fwd"].calls == 61
    assert all(events[parent[i]]["name"] == "work" for i, e in enumerate(events) if e["name"] == "relu_fwd")
    assert len({e["thread"] for e in events}) == 4


def test_a_profile_started_inside_a_range_records_only_what_follows():
    with ck.profiler.record_function("before"):
        with ck.profiler.profile() as prof:
            with ck.profiler.record_function("inside"):
                pass
    assert [e["name"] for e in prof.events()] == ["inside"]


def test_profiles_do_not_nest():
    with ck.profiler.profile() as outer:
        with pytest.raises(RuntimeError, match="a profile is already recording"):
            with ck.profiler.profile():
                pass
        with ck.profiler.record_function("still recorded"):
            pass
    assert [e["name"] for e in outer.events()] == ["still recorded"]
    with pytest.raises(RuntimeError, match="already recorded; make a new profile"):
        with outer:
            pass
    with pytest.raises(RuntimeError, match="still recording"):
        with ck.profiler.profile() as p:
            p.table()
    with pytest.raises(TypeError, match="name must be a non-empty str, got 3"):
        ck.profiler.record_function(3)


# ---------------------------------------------------------------- the command line

def test_cnnkit_train_profile_writes_table_and_trace(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "cnnkit", "train", "--epochs", "1", "--no-plots", "--profile",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "profile.txt" in r.stdout
    table = (out / "profile.txt").read_text()
    names = _table_names(table)
    assert {"Conv2d.forward", "Conv2d.backward", "conv2d_fwd", "Adam.step", "DataLoader.batch"} <= set(names)
    trace = json.loads((out / "trace.json").read_text())
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    steps = -(-len(ck.data.load_digits()["train"]) // ck_config.DEFAULTS["batch_size"])   # one epoch
    assert sum(e["name"] == "Adam.step" for e in xs) == steps
