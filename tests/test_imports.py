"""The import graph of cnnkit's own modules, imports inside function bodies included: no cycle may come back.

Each module is parsed (not imported); `from . import x` and `from .x import y` are resolved to module names. A
strongly connected component of more than one module is a cycle. KNOWN lists the cycles not yet taken apart:
a new cycle fails the test, and so does a known one that is gone (then remove it from KNOWN).
"""
import ast
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python", "cnnkit")

KNOWN = {
    # the Layer base shares graph.py with the containers; save/load and torch state dicts are reached from it
    frozenset({"cnnkit.graph", "cnnkit.layers", "cnnkit.serialize", "cnnkit.zoo.torch_io"}),
}


def _modules():
    mods = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(ROOT))[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                mods[".".join(rel)] = os.path.join(dirpath, f)
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
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
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
    # a package's __init__ importing its submodules is how a package is built, not a cycle
    return {m: {t for t in _imports(m, p, mods) if not m.startswith(t + ".")} for m, p in mods.items()}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
    assert _cycles({"a": {"b"}, "b": set()}) == set()


def test_no_new_import_cycle():
    found = _cycles(_graph())
    assert found - KNOWN == set(), f"new import cycles: {sorted(map(sorted, found - KNOWN))}"
    assert KNOWN - found == set(), f"cycles gone, remove them from KNOWN: {sorted(map(sorted, KNOWN - found))}"


if __name__ == "__main__":
    for c in sorted(map(sorted, _cycles(_graph()))):
        print(c)
    sys.exit(0)
