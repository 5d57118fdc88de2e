"""The import graph of cnnkit's own modules, imports inside function bodies included: no cycle may come back.

Each module is parsed (not imported); `from . import x` and `from .x import y` are resolved to module names. A
strongly connected component of more than one module is a cycle. KNOWN lists the cycles not yet taken apart:
a new cycle fails the test, and so does a known one that is gone (then remove it from KNOWN).
"""
import ast
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python", "cnnkit")

KNOWN = set()   # frozensets of module names; none left


def _modules():
    mods = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(ROOT))[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                mods[".".join(rel)] = os.path.join(dirpath, f)
    mods["cnnkit._C"] = None   # the extension module: a leaf
    return mods


def _imports(name, path, mods):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from pkg import sub` imports the submodule; pkg itself counts only for a name that is not one
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            targets = subs + ([base] if len(subs) < len(node.names) else [])
        else:
            continue
        for t in targets:
            while t and t not in mods:   # `import cnnkit.x.y` or a name from a module: its module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _cycles(graph):
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        comps.append(frozenset(comp))
    return set(comps)


def _graph():
    mods = _modules()
    # Every edge counts, a submodule's import of its own package included: ops/_cuda.py taking names from
    # ops/__init__.py while that imports ops/_cuda.py is a cycle.
    return {m: (_imports(m, p, mods) if p else set()) for m, p in mods.items()}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
    assert _cycles({"a": {"b"}, "b": set()}) == set()


def test_no_new_import_cycle():
    found = _cycles(_graph())
    assert found - KNOWN == set(), f"new import cycles: {sorted(map(sorted, found - KNOWN))}"
    assert KNOWN - found == set(), f"cycles gone, remove them from KNOWN: {sorted(map(sorted, KNOWN - found))}"


def test_low_modules_import_no_layer_module():
    # what the Layer base's own methods reach (save/load, torch state dicts, the registry, atomic writes)
    mods = _modules()
    for low in ("cnnkit._registry", "cnnkit._io", "cnnkit.serialize", "cnnkit.state_dict"):
        got = _imports(low, mods[low], mods) & {"cnnkit.layer", "cnnkit.graph", "cnnkit.layers", "cnnkit.zoo"}
        assert not got, f"{low} imports {sorted(got)}"
    assert _imports("cnnkit._registry", mods["cnnkit._registry"], mods) == set()


def test_only_the_ops_backend_switch_reaches_the_gpu_backend():
    # cnnkit.ops._backend.kernels(a) is the one CPU/GPU switch: no module outside cnnkit.ops imports ops._cuda
    # (the ops themselves call it through _backend too, so within ops only _backend does)
    mods = _modules()
    reach = sorted(m for m, p in mods.items() if p and "cnnkit.ops._cuda" in _imports(m, p, mods))
    assert reach == ["cnnkit.ops._backend"], reach


def test_dir_of_ops_lists_the_public_functions_only():
    import cnnkit as ck
    public = ["batchnorm_bwd", "batchnorm_stats", "channel_affine", "conv2d_bwd_bias", "conv2d_bwd_data",
              "conv2d_bwd_weight", "conv2d_fwd", "conv2d_out_shape", "dropout_bwd", "dropout_fwd",
              "get_conv_algorithm", "matmul", "maxpool2d_bwd", "maxpool2d_fwd", "relu_bwd", "relu_fwd",
              "set_conv_algorithm"]
    assert dir(ck.ops) == public and sorted(ck.ops.__all__) == public
    assert all(callable(getattr(ck.ops, n)) for n in dir(ck.ops))
    # the submodules stay importable by name; they are just not listed
    import cnnkit.ops.conv2d
    assert ck.ops.conv2d_fwd is cnnkit.ops.conv2d.conv2d_fwd


def test_one_home_for_state_dicts_and_layers():
    import cnnkit as ck
    import cnnkit.state_dict as sd
    for n in ("state_dict", "load_torch_state_dict", "export_torch_state_dict", "StateDictError"):
        assert getattr(ck.zoo, n) is getattr(sd, n)
    assert ck.Layer is ck.layer.Layer and ck.graph.Layer is ck.Layer and ck.Node is ck.layer.Node


if __name__ == "__main__":
    for c in sorted(map(sorted, _cycles(_graph()))):
        print(c)
    sys.exit(0)

