"""The Python sources pass ruff with the repository's settings ([tool.ruff] in pyproject.toml)."""
import os
import shutil
import subprocess

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
