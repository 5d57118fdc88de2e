# The per-level kernel modules (_C_avx512, _C_avx2, _C_generic): every level this CPU runs gives the same
# results as the best one (bit for bit where the kernels promise it, within the float32 summation bound
# elsewhere), and the lower levels' machine code holds no instruction of a higher level (a scan of the
# disassembly with objdump, skipped where objdump is missing).
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cnnkit
from cnnkit import _C

from helpers import reference as R

BATTERY = os.path.join(os.path.dirname(__file__), "helpers", "isa_battery.py")
LEVELS = [isa for isa in _C.LEVELS if isa in _C.SUPPORTED and isa in _C.BUILT]


def _run_battery(isa, path):
    env = dict(os.environ, CNNKIT_ISA=isa, OMP_NUM_THREADS="2")
    res = subprocess.run([sys.executable, BATTERY, str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    return dict(np.load(path))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if len(LEVELS) < 2:
        pytest.skip(f"one kernel level only (CPU runs {_C.SUPPORTED}, built {_C.BUILT}): nothing to compare")
    d = tmp_path_factory.mktemp("isa")
    return {isa: _run_battery(isa, d / f"{isa}.npz") for isa in LEVELS}


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_each_level_matches_the_best_level(results, isa):
    if isa not in results:
        pytest.skip(f"{isa} is not a level this CPU runs and this build holds ({LEVELS})")
    best, got = results[LEVELS[0]], results[isa]
    assert str(got["info/module_isa"]) == isa and str(got["info/isa"]) == isa   # CNNKIT_ISA chose the module
    assert sorted(best) == sorted(got)
    checked = 0
    for key, ref in best.items():
        kind, _, name = key.partition("/")
        if kind == "info":
            continue
        val = got[key]
        assert val.dtype == ref.dtype and val.shape == ref.shape, key
        if kind == "exact":
            assert val.tobytes() == ref.tobytes(), f"{key}: not bit for bit the {LEVELS[0]} result"
        elif kind.startswith("sum"):
            # inputs in [-1, 1]: every summed term is bounded by 1 (batch norm's by a small constant)
            R.assert_close(val, ref, reduction=int(kind[3:]), scale=1.0, dtype=np.float32)
        elif kind == "step":
            tol = 1e-5 * float(np.abs(ref).max())
            assert float(np.abs(val.astype(np.float64) - ref).max()) <= tol, key
        else:
            raise AssertionError(f"battery key {key}: unknown kind {kind}")
        checked += 1
    assert checked > 30


def test_exact_results_are_exact_between_levels_on_purpose(results):
    """The battery's exact keys are the ones the kernels promise bit for bit; the GEMM-based ones really do
    round differently on the baseline level (no FMA), so the tolerance above is needed and not a blanket."""
    if "generic" not in results:
        pytest.skip("the generic level is not loadable here")
    best, gen = results[LEVELS[0]], results["generic"]
    assert any(not np.array_equal(best[k], gen[k]) for k in best if k.startswith("sum"))
    assert sum(k.startswith("exact/") for k in best) >= 9


# Instructions a level may not contain: any VEX/EVEX instruction (mnemonics v...) below AVX2; EVEX below
# AVX-512 (zmm registers, the upper 16 xmm/ymm registers, mask registers, embedded broadcasts).
_VEX = re.compile(r"\tv[a-z0-9]+\s")
_EVEX = re.compile(r"%zmm|%[xy]mm(1[6-9]|2[0-9]|3[01])\b|%k[0-7]\b|\{1to\d+\}")


def _functions_using(path, pattern):
    dump = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True,
                          timeout=600, check=True).stdout
    hits, fn = set(), None
    for line in dump.splitlines():
        if line.endswith(">:"):
            fn = line.split("<", 1)[1][:-2]
        elif fn is not None and pattern.search(line):
            hits.add(fn)
    return sorted(hits)


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
@pytest.mark.parametrize("module,pattern", [("_cpu", _VEX), ("_C_generic", _VEX), ("_C_avx2", _EVEX)])
def test_lower_levels_hold_no_higher_instruction(module, pattern):
    spec = importlib.util.find_spec(f"cnnkit.{module}")
    if spec is None:
        pytest.skip(f"cnnkit.{module} is not in this build (built: {_C.BUILT})")
    hits = _functions_using(spec.origin, pattern)
    assert hits == [], f"{module}: {len(hits)} functions use instructions above its level, e.g. {hits[:5]}"


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_the_scan_sees_the_instructions_it_looks_for():
    """The same scan finds AVX-512 code in the avx512 module (so an empty result above is not a broken
    scan), and VEX code in the avx2 module."""
    for module, pattern in (("_C_avx512", _EVEX), ("_C_avx2", _VEX)):
        spec = importlib.util.find_spec(f"cnnkit.{module}")
        if spec is None:
            pytest.skip(f"cnnkit.{module} is not in this build (built: {_C.BUILT})")
        assert len(_functions_using(spec.origin, pattern)) > 10, module


def test_build_info_reports_the_levels():
    info = cnnkit.build_info()
    assert info["module_isa"] == _C.MODULE_ISA
    assert info["isa_supported"].split(",") == _C.SUPPORTED and info["isa_supported"].endswith("generic")
    assert info["isa_compiled"].split(",") == _C.BUILT
    if _C.MODULE_ISA != "native":
        assert info["isa"] == _C.MODULE_ISA          # the module's own best GEMM micro-kernel
    if platform.machine() in ("x86_64", "AMD64"):
        march = {"generic": "-march=x86-64 ", "avx2": "-march=x86-64-v3", "avx512": "-march=x86-64-v4",
                 "native": "-march=native"}[_C.MODULE_ISA]
        assert march in info["build_flags"] + " "


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo") or platform.machine() != "x86_64",
                    reason="needs Linux's /proc/cpuinfo on x86-64")
def test_cpu_levels_agree_with_the_kernels_cpu_flags():
    """_cpu reads CPUID and XCR0 itself; Linux's flags (which also reflect what the kernel enabled) must give
    the same levels."""
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    v3 = {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"} <= flags   # abm: LZCNT on both vendors
    v4 = v3 and {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"} <= flags
    expected = (["avx512"] if v4 else []) + (["avx2"] if v3 else []) + ["generic"]
    assert _C.SUPPORTED == expected, (flags & {"avx2", "avx512f"}, _C.SUPPORTED)
