# The built wheel's contents, when CNNKIT_WHEEL names it (CI builds, repairs and installs the wheel, then
# runs the suite with CNNKIT_WHEEL set): only the package, its grafted libraries and its metadata; the licence
# files and the bundled digits data; every kernel module; no path of the machine that built it.
import os
import platform
import re
import zipfile

import pytest

WHEEL = os.environ.get("CNNKIT_WHEEL")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not WHEEL, reason="CNNKIT_WHEEL does not name a built wheel (.ci/run sets it)")


@pytest.fixture(scope="module")
def wheel():
    with zipfile.ZipFile(WHEEL) as z:
        yield z


def test_the_wheel_holds_the_package_its_libraries_and_metadata_only(wheel):
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    dist_info = [t for t in tops if t.endswith(".dist-info")]
    assert len(dist_info) == 1 and dist_info[0].startswith("cnnkit-")
    assert tops - set(dist_info) <= {"cnnkit", "cnnkit.libs"}, tops
    assert not [n for n in wheel.namelist() if re.search(r"(^|/)(tests?|bench|csrc|build)/", n)]
    assert not [n for n in wheel.namelist() if n.endswith((".cpp", ".cu", ".h", ".o", ".a"))]


def test_licences_and_bundled_data_are_in(wheel):
    names = wheel.namelist()
    assert any(re.search(r"\.dist-info/(licenses/)?LICENSE$", n) for n in names), "the project licence"
    assert "cnnkit/data/digits.npz" in names and "cnnkit/data/DIGITS_LICENSE.txt" in names
    assert wheel.getinfo("cnnkit/data/digits.npz").file_size > 40_000   # the real data, not a stub
    meta = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert re.search(r"^License(-Expression)?: MIT", meta, re.M), meta[:500]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the per-level modules are x86-64's")
def test_every_kernel_level_is_in_and_linux_wheels_are_repaired(wheel):
    names = wheel.namelist()
    for module in ("_cpu", "_C_generic", "_C_avx2", "_C_avx512"):
        assert any(re.fullmatch(rf"cnnkit/{module}\..*(so|pyd)", n) for n in names), module
    assert not any("_C_native" in n for n in names), "a wheel must not hold the -march=native module"
    if platform.system() == "Linux":
        assert re.search(r"-manylinux_\d+_\d+_x86_64\.whl$", WHEEL), WHEEL
        assert any(re.fullmatch(r"cnnkit\.libs/libgomp-[0-9a-f]+\.so[.0-9]*", n) for n in names), \
            "auditwheel grafts libgomp"


def test_no_path_of_the_build_machine_is_embedded(wheel):
    needles = [ROOT.encode(), b"/tmp/", os.path.expanduser("~").encode() + b"/"]
    for name in wheel.namelist():
        if name.endswith((".so", ".pyd", ".dylib")) or ".so." in name:
            data = wheel.read(name)
            found = [n.decode() for n in needles if n in data]
            assert not found, f"{name} embeds {found}"


def test_the_cpu_wheel_is_small():
    size = os.path.getsize(WHEEL)
    print(f"{os.path.basename(WHEEL)}: {size / 1e6:.2f} MB")
    assert size < 5e6, f"{WHEEL}: {size / 1e6:.1f} MB (a CPU wheel is about 1.6 MB; was CUDA compiled in?)"
