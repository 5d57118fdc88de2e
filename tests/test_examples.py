# The README points users at examples/: each one runs to the end from a fresh folder and prints what its
# docstring promises (deterministic seeds, so the accuracies are stable on a given machine).
import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"

CASES = {
    # example: (text it must print, regex capturing an accuracy, the least that accuracy may be)
    "kernels_demo.py": ("conv2d_fwd", None, None),
    "train_digits.py": ("test with EMA weights", r"best val acc ([0-9.]+)", 0.95),
    "transfer_digits.py": ("frozen weights unchanged: True", r"frozen features: test accuracy ([0-9.]+)", 0.7),
    "transfer_zoo.py": ("images/class", r"pretrained on digits 0-4: test accuracy ([0-9.]+)", 0.9),
}


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/ is not in this checkout")
@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs_and_prints_what_it_promises(name, tmp_path):
    must, pattern, least = CASES[name]
    r = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert must in r.stdout, r.stdout[-3000:]
    if pattern is not None:
        m = re.search(pattern, r.stdout)
        assert m and float(m.group(1)) >= least, r.stdout[-3000:]
