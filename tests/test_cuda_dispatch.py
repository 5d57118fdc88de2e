"""The device dispatch of cnnkit.ops: CUDA's status, which bindings exist, and the errors for device arrays
where CUDA is unusable and for mixed or different devices.

The per-op comparisons of the CPU with the CuPy stand-in and a GPU are in tests/ops/ (typed over devices by
tests/ops/conftest.py). What always runs here: the status reason, the no-cupy-at-import guarantee, and the
dispatch and mixed-device errors, using a stand-in class whose module name says "cupy". The rest needs a GPU, a
CUDA build of cnnkit and CuPy; without them it is skipped with cnnkit.cuda.status() as the reason.
"""
import subprocess
import sys

import numpy as np
import pytest

import cnnkit
from cnnkit import _C, ops

needs_cuda = pytest.mark.skipif(not cnnkit.cuda.is_available(), reason=f"CUDA unavailable: {cnnkit.cuda.status()}")
FLOATS = [np.float32, np.float64]


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


# ---------------------------------------------------------------- runs everywhere

class FakeDeviceArray:
    """Looks like a CuPy array to the dispatcher (which only reads type(a).__module__)."""
    __module__ = "cupy._core.core"

    def __init__(self, shape=(1, 1, 4, 4)):
        self.shape = shape
        self.ndim = len(shape)
        self.dtype = np.dtype(np.float32)


def test_status_explains_why_cuda_is_unusable():
    status = cnnkit.cuda.status()
    if cnnkit.cuda.is_available():
        assert status == "ok"
    else:
        assert any(s in status for s in ("built without CUDA", "no CUDA device", "CuPy is not importable",
                                         "no CUDA kernels")), status


def test_importing_cnnkit_does_not_import_cupy():
    code = "import sys, cnnkit, cnnkit.ops; assert 'cupy' not in sys.modules, 'cupy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cuda_bindings_exist_exactly_when_built_with_cuda():
    names = ["conv2d_fwd_cuda", "conv2d_bwd_data_cuda", "conv2d_bwd_weight_cuda", "conv2d_bwd_bias_cuda",
             "maxpool2d_fwd_cuda", "maxpool2d_bwd_cuda", "dropout_fwd_cuda", "dropout_bwd_cuda", "relu_fwd_cuda",
             "relu_bwd_cuda", "sgd_step_cuda", "adagrad_step_cuda", "rmsprop_step_cuda", "adam_step_cuda",
             "grad_sumsq_cuda", "grad_scale_clamp_cuda", "maxnorm_rows_cuda"]
    built = cnnkit.build_info()["cuda"]
    assert [hasattr(_C, n) for n in names] == [built] * len(names)


@pytest.mark.skipif(cnnkit.cuda.is_available(), reason="CUDA is usable here: the refusal path cannot be reached")
@pytest.mark.parametrize("call", [
    lambda x: ops.relu_fwd(x),
    lambda x: ops.maxpool2d_fwd(x, 2),
    lambda x: ops.dropout_fwd(x, 0.5, 1),
    lambda x: ops.conv2d_fwd(x, x),
    lambda x: ops.matmul(x, x),
])
def test_device_arrays_without_cuda_raise_runtime_error_with_the_reason(call):
    with pytest.raises(RuntimeError, match="CUDA is not usable here: ") as e:
        call(FakeDeviceArray())
    assert cnnkit.cuda.status() in str(e.value)


def test_numpy_first_with_a_device_array_is_a_mixed_device_type_error():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(TypeError, match=r"conv2d_fwd: mixed devices: w is a cupy\.ndarray \(GPU\) but x is a "
                                        r"numpy\.ndarray \(CPU\)"):
        ops.conv2d_fwd(x, FakeDeviceArray())
    with pytest.raises(TypeError, match=r"relu_bwd: mixed devices: y is a cupy\.ndarray .* dy is a numpy"):
        ops.relu_bwd(x, FakeDeviceArray())
    with pytest.raises(TypeError, match=r"maxpool2d_bwd: mixed devices: indices is a cupy"):
        ops.maxpool2d_bwd(x, FakeDeviceArray(), (1, 1, 8, 8))


# ---------------------------------------------------------------- device-path argument errors (need a GPU)


@needs_cuda
def test_device_first_with_a_numpy_array_is_a_mixed_device_type_error(cp):
    x = cp.zeros((1, 1, 4, 4), cp.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(TypeError, match=r"conv2d_fwd: mixed devices: x is a cupy\.ndarray \(GPU\) but w is a "
                                        r"numpy\.ndarray \(CPU\)"):
        ops.conv2d_fwd(x, w)
    with pytest.raises(TypeError, match=r"dropout_bwd: mixed devices: dy is a cupy\.ndarray .* mask is a numpy"):
        ops.dropout_bwd(cp.zeros(4, cp.float32), np.ones(4, np.uint8), 0.5)


@needs_cuda
def test_device_path_checks_dtype_layout_and_shape_like_the_cpu(cp):
    x = cp.zeros((2, 3, 8, 8), cp.float32)
    with pytest.raises(TypeError, match=r"conv2d_fwd: w must have the dtype of x"):
        ops.conv2d_fwd(x, cp.zeros((4, 3, 3, 3), cp.float64))
    with pytest.raises(TypeError, match=r"relu_fwd: x must be float32 or float64, got int32"):
        ops.relu_fwd(cp.zeros(3, cp.int32))
    with pytest.raises(ValueError, match=r"maxpool2d_fwd: x must be C-contiguous"):
        ops.maxpool2d_fwd(x.transpose(0, 1, 3, 2), 2)
    with pytest.raises(ValueError, match=r"conv2d_fwd: w.shape\[1\] must be C/groups"):
        ops.conv2d_fwd(x, cp.zeros((4, 2, 3, 3), cp.float32))
    with pytest.raises(ValueError, match=r"dropout_fwd: p \(the drop probability\) must be in \[0, 1\)"):
        ops.dropout_fwd(x, 1.0, 0)


@needs_cuda
def test_arrays_on_different_gpus_are_refused(cp):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cp.cuda.Device(0):
        x = cp.zeros((1, 1, 4, 4), cp.float32)
    with cp.cuda.Device(1):
        w = cp.zeros((1, 1, 3, 3), cp.float32)
    with pytest.raises(ValueError, match=r"conv2d_fwd: w is on GPU 1 but x is on GPU 0"):
        ops.conv2d_fwd(x, w)
