# CUDA availability. On a machine with no usable GPU the device block is skipped with cnnkit.cuda.status()
# as the reason; what always runs is the check that the status is a non-empty reason string consistent with
# is_available().
import pytest

import cnnkit

needs_cuda = pytest.mark.skipif(not cnnkit.cuda.is_available(), reason=f"CUDA unavailable: {cnnkit.cuda.status()}")


def test_status_is_a_reason_string():
    status = cnnkit.cuda.status()
    assert isinstance(status, str) and status.strip()
    if cnnkit.cuda.is_available():
        assert status == "ok"
    else:
        assert status != "ok" and len(status) > 10  # says why: no build, no device/driver, or no CuPy


@needs_cuda
def test_cuda_device_is_visible():
    assert cnnkit.build_info()["cuda"] is True
    assert cnnkit.cuda.device_count() >= 1

# The device ops themselves (CuPy arrays through cnnkit.ops) are tested in tests/ops/, typed over devices.
