"""The Python sources pass ruff with the repository's settings ([tool.ruff] in pyproject.toml)."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "pyproject.toml")),
                    reason="needs the source tree (pyproject.toml beside tests/)")
def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is not installed: it is in the [test] extra (pip install '.[test]')"
    res = subprocess.run([ruff, "check", "--no-cache", "python", "tests", "bench", "tools", "examples"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def _cxx_sources():
    exts = (".h", ".cpp", ".cu", ".cuh")
    out = []
    for d, _, names in os.walk(os.path.join(ROOT, "csrc")):
        out += sorted(os.path.join(d, n) for n in names if n.endswith(exts))
    return sorted(out)


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "csrc")),
                    reason="needs the source tree (csrc/ beside tests/)")
def test_clang_format_finds_nothing():
    exe = shutil.which("clang-format")
    if exe is None:
        pytest.skip("the clang-format executable is not installed: it is in the [test] extra (pip install '.[test]')")
    files = _cxx_sources()
    assert len(files) > 20, files
    res = subprocess.run([exe, "--dry-run", "--Werror", *files], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-6000:]


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "csrc")),
                    reason="needs the source tree (csrc/ beside tests/)")
def _over_500_lines(paths):
    long = {}
    for f in paths:
        with open(f, encoding="utf-8") as fh:
            n = sum(1 for _ in fh)
        if n > 500:
            long[os.path.relpath(f, ROOT)] = n
    return long


def test_no_cxx_source_over_500_lines():
    long = _over_500_lines(_cxx_sources())
    assert long == {}, f"split these along their seams: {long}"


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "python")),
                    reason="needs the source tree (python/ beside tests/)")
def test_no_python_file_over_500_lines():
    long = _over_500_lines(os.path.join(d, name) for top in ("python", "tests", "bench", "tools", "examples")
                           for d, _, files in os.walk(os.path.join(ROOT, top)) for name in files
                           if name.endswith(".py"))
    assert long == {}, f"split these along their seams: {long}"


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "docs")),
                    reason="needs the source tree (docs/ beside tests/)")
def test_design_doc_names_files_that_exist():
    # every file path docs/design.md quotes (`a/b.py`) and every folder of its code map is in the tree
    import re
    text = open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8").read()
    quoted = {p for p in re.findall(r"`([\w./-]+/[\w.-]+\.\w+)`", text)}
    code_map = text.split("```")[1]
    folders = {"tests/" + m for m in re.findall(r"^  (\w+)/", code_map.split("tests/", 1)[1], re.M)}
    missing = sorted(p for p in quoted | folders if not os.path.exists(os.path.join(ROOT, p)))
    assert len(quoted) >= 10 and folders == {"tests/ops", "tests/helpers"}, (quoted, folders)
    assert missing == [], missing


def test_shared_helpers_live_in_tests_helpers_and_import_from_any_cwd(tmp_path):
    # tests/ holds test files and conftest.py; what they share is the package tests/helpers, found from any
    # working directory (CI runs `python -m pytest <repo>/tests` from elsewhere)
    here = os.path.dirname(os.path.abspath(__file__))
    loose = sorted(f for f in os.listdir(here) if f.endswith(".py") and not f.startswith("test_") and f != "conftest.py")
    assert loose == [], f"shared helpers belong in tests/helpers/: {loose}"
    files = [os.path.join(here, f) for f in ("test_device.py", "test_cli.py", "test_optim_rules.py")] + \
        [os.path.join(here, "ops", "test_relu.py")]
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider", *files],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    tail = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    assert res.returncode == 0 and "collected" in tail and "error" not in tail, res.stdout[-3000:] + res.stderr[-2000:]
