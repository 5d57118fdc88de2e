"""Augmentation on the GPU: the CUDA pipeline against the CPU one, and DataLoader(device=...).

The device tests need a GPU, a CUDA build of cnnkit and CuPy; without them they are skipped with
cnnkit.cuda.status() as the reason. They were written on a machine with no GPU and have NOT run yet: the
first run on a GPU is their first run. Bit for bit for flips, crops, resized crops and colour jitter; for
PCALighting and RandomAffine the bound of docs/kernels.md (CUDA's log/cos/sin against glibc's).
What always runs: the binding's own checks (in a CUDA build), the refusal of CuPy batches and of
device="cuda" where CUDA is unusable, and the validation of DataLoader's `device` argument.
"""
import numpy as np
import pytest
from test_cuda_dispatch import FLOATS, FakeDeviceArray, cp, needs_cuda  # noqa: F401  (cp: the CuPy fixture)
from test_data_device import assert_loader_matches_cpu

import cnnkit
from cnnkit import _C
from cnnkit import data as D

no_cuda = pytest.mark.skipif(cnnkit.cuda.is_available(), reason="CUDA is usable here: the refusal path cannot be reached")


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- runs everywhere

def test_aug_binding_exists_exactly_when_built_with_cuda():
    assert hasattr(_C, "aug_pipeline_cuda") == cnnkit.build_info()["cuda"]


needs_binding = pytest.mark.skipif(not hasattr(_C, "aug_pipeline_cuda"), reason="cnnkit built without CUDA")
FLIP = (1, 0x11, [0.5, 0, 0, 0, 0, 0], 8, 8, None, None)


@needs_binding
def test_binding_checks_shapes_and_stages_before_touching_the_device():
    # Every call here fails in C++ before any CUDA call, so it runs without a GPU; 8 is a dummy non-null pointer.
    call = _C.aug_pipeline_cuda
    with pytest.raises(ValueError, match=r"augment: x must be 4-D \(N, C, H, W\), got shape \(2, 3, 8\)"):
        call(8, 8, 8, [2, 3, 8], [FLIP], 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="augment: stages must not be empty"):
        call(8, 8, 8, [2, 3, 8, 8], [], 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"augment: crop size \(9, 9\) must fit in the padded image \(8, 8\)"):
        call(8, 8, 8, [2, 3, 8, 8], [(2, 0x12, [0, 0, 0, 0, 0, 0], 9, 9, 0, 0)], 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"augment: stage kind 1 keeps the plane size \(8, 8\), got \(8, 7\)"):
        call(8, 8, 8, [2, 3, 8, 8], [(1, 0x11, [0.5, 0, 0, 0, 0, 0], 8, 7, 0, 0)], 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="augment: saturation needs C == 3, got C = 1"):
        call(8, 8, 8, [2, 1, 8, 8], [(4, 0x14, [0, 0, 0.5, 0, 0, 0], 8, 8, 0, 0)], 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="augment: lighting eigval and eigvec must be non-null device pointers"):
        call(8, 8, 8, [2, 3, 8, 8], [(5, 0x15, [0.1, 0, 0, 0, 0, 0], 8, 8, 0, 8)], 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="augment: ids is a null device pointer for 2 elements"):
        call(8, 8, 0, [2, 3, 8, 8], [FLIP], 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="augment: x is a null device pointer"):
        call(0, 8, 8, [2, 3, 8, 8], [FLIP], 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"augment: dtype code must be 0 \(float32\) or 1 \(float64\), got 2"):
        call(8, 8, 8, [2, 3, 8, 8], [FLIP], 0, 0, 0, 2, 0)


@no_cuda
@pytest.mark.parametrize("make", [
    lambda: D.RandomHorizontalFlip(),
    lambda: D.Compose([D.RandomCrop(4, padding=1), D.ColorJitter(0.2, 0.2, 0.2)]),
    lambda: D.CenterCrop(4),
])
def test_cupy_batches_without_cuda_raise_runtime_error_with_the_reason(make):
    with pytest.raises(RuntimeError, match="CUDA is not usable here: ") as e:
        make()(FakeDeviceArray())
    assert cnnkit.cuda.status() in str(e.value)


def test_numpy_batch_with_device_ids_is_a_mixed_device_type_error():
    with pytest.raises(TypeError, match=r"RandomHorizontalFlip: mixed devices: ids is a cupy\.ndarray \(GPU\) but x "
                                        r"is a numpy\.ndarray \(CPU\)"):
        D.RandomHorizontalFlip()(rand((1, 1, 4, 4)), ids=FakeDeviceArray((1,)))


def _pair(n=10):
    return rand((n, 3, 6, 6), 4), np.arange(n, dtype=np.int64) % 3


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:-1", "cuda:x", "CUDA", "cuda0", " cuda", "cpu:0", ""])
def test_loader_device_must_be_a_known_spelling(device):
    with pytest.raises(ValueError, match=r"DataLoader: device must be None, 'cpu', 'cuda' or 'cuda:N' \(N a device "
                                         rf"index\), got '{device}'"):
        D.DataLoader(_pair(), 4, device=device)


@pytest.mark.parametrize("device", [0, 1.5, b"cuda", ("cuda", 0)])
def test_loader_device_must_be_a_string_or_none(device):
    with pytest.raises(TypeError, match=r"DataLoader: device must be None, 'cpu', 'cuda' or 'cuda:N' .*, got "
                                        rf"{type(device).__name__} "):
        D.DataLoader(_pair(), 4, device=device)


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_loader_on_cuda_without_cuda_says_why(device):
    with pytest.raises(RuntimeError, match=rf"DataLoader: device='{device}' needs CUDA, which is not usable here: ") as e:
        D.DataLoader(_pair(), 4, device=device)
    assert str(e.value).endswith(cnnkit.cuda.status())


def test_loader_on_cpu_is_the_default_loader():
    x, y = _pair()
    aug = D.Compose([D.RandomCrop(6, padding=1), D.RandomHorizontalFlip()])
    runs = []
    for device in (None, "cpu"):
        ld = D.DataLoader((x, y), 4, shuffle=True, seed=3, transform=aug, device=device)
        assert ld.device == device
        runs.append([(bx, by) for bx, by in ld] + [ld.state_dict()])
    for (bx0, by0), (bx1, by1) in zip(runs[0][:-1], runs[1][:-1]):
        assert isinstance(bx1, np.ndarray)
        np.testing.assert_array_equal(bx0, bx1)
        np.testing.assert_array_equal(by0, by1)
    assert runs[0][-1] == runs[1][-1]
    assert "device" not in runs[0][-1]  # state_dict is unchanged: a position, not a placement


# ---------------------------------------------------------------- device tests (need a GPU)

EIGVAL = np.array([0.2175, 0.0188, 0.0045])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
EXACT = {  # name: (transform, channels)
    "flip": (lambda: D.RandomHorizontalFlip(0.5), 3),
    "crop": (lambda: D.RandomCrop((7, 9), padding=2), 3),
    "resized_crop": (lambda: D.RandomResizedCrop((5, 12)), 3),
    "resized_crop_fallback": (lambda: D.RandomResizedCrop(6, scale=(0.9, 1.0), ratio=(3.0, 4.0)), 3),
    "jitter_rgb": (lambda: D.ColorJitter(0.4, 0.4, 0.4), 3),
    "jitter_gray": (lambda: D.ColorJitter(0.3, 0.5, 0.0), 1),
    "jitter_brightness_c4": (lambda: D.ColorJitter(0.3), 4),
}
KEYS = [(0, 0), (12345678901234, 7), (2**64 - 1, 2**32 - 1)]
IDS = np.array([3, 17, 10**11, 5, 42, 0, 9], dtype=np.int64)


def ulp(a):
    return np.spacing(np.abs(a).astype(a.dtype))


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_transforms_match_cpu_bit_for_bit(cp, dtype, name):
    make, C = EXACT[name]
    t = make()
    x = rand((len(IDS), C, 10, 11), 1, dtype)
    x[0, 0, 2, 3] = np.nan
    for seed, epoch in KEYS:
        y, params = t(x, ids=IDS, epoch=epoch, seed=seed, return_params=True)
        yd, paramsd = t(cp.asarray(x), ids=IDS, epoch=epoch, seed=seed, return_params=True)
        assert isinstance(yd, cp.ndarray) and yd.dtype == dtype and yd.shape == y.shape
        np.testing.assert_array_equal(yd.get(), y)
        np.testing.assert_array_equal(paramsd.get(), params)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
def test_lighting_within_the_libm_bound(cp, dtype):
    t = D.PCALighting(0.1, EIGVAL, EIGVEC)
    x = rand((len(IDS), 3, 10, 11), 2, dtype)
    for seed, epoch in KEYS:
        y, alpha = t(x, ids=IDS, epoch=epoch, seed=seed, return_params=True)
        yd, alphad = t(cp.asarray(x), ids=IDS, epoch=epoch, seed=seed, return_params=True)
        np.testing.assert_allclose(alphad.get(), alpha, rtol=2.0**-48, atol=0)
        # |dy| <= 1 ulp of T + 2^-48 * sum_k |eigvec[c, k] alpha_k eigval_k|   (docs/kernels.md)
        terms = np.abs(EIGVEC[None] * (alpha * EIGVAL)[:, None, :]).sum(-1)[:, :, None, None]
        assert np.all(np.abs(yd.get().astype(np.float64) - y) <= ulp(y) + 2.0**-48 * terms)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
def test_affine_within_the_libm_bound(cp, dtype):
    t = D.RandomAffine(30.0, translate=(0.2, 0.1), scale=(0.8, 1.2), fill=0.5)
    x = rand((len(IDS), 3, 10, 11), 3, dtype)
    M = max(np.abs(x).max(), 0.5)
    bound = 2.0**-44 * M * (1 + 11 / 0.8)
    for seed, epoch in KEYS:
        y, params = t(x, ids=IDS, epoch=epoch, seed=seed, return_params=True)
        yd, paramsd = t(cp.asarray(x), ids=IDS, epoch=epoch, seed=seed, return_params=True)
        np.testing.assert_array_equal(paramsd.get(), params)  # the draws use no libm function
        assert np.all(np.abs(yd.get().astype(np.float64) - y) <= ulp(y) + bound)
    # no rotation: no libm function at all, so bit for bit
    t0 = D.RandomAffine(0.0, translate=(0.2, 0.1), scale=(0.8, 1.2), fill=0.5)
    np.testing.assert_array_equal(t0(cp.asarray(x), ids=IDS, seed=5).get(), t0(x, ids=IDS, seed=5))


def pipeline():
    return D.Compose([D.RandomResizedCrop(9, scale=(0.5, 1.0)), D.RandomHorizontalFlip(),
                      D.ColorJitter(0.2, 0.3, 0.4), D.RandomCrop(8, padding=1), D.CenterCrop(7)])


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
def test_compose_matches_cpu_bit_for_bit_and_ids_may_be_numpy_cupy_or_default(cp, dtype):
    aug = pipeline()
    x = rand((len(IDS), 3, 12, 10), 5, dtype)
    y = aug(x, ids=IDS, epoch=2, seed=11)
    xd = cp.asarray(x)
    for ids in (IDS, cp.asarray(IDS)):
        yd = aug(xd, ids=ids, epoch=2, seed=11)
        assert isinstance(yd, cp.ndarray) and yd.shape == (len(IDS), 3, 7, 7)
        np.testing.assert_array_equal(yd.get(), y)
    ids32 = np.array([3, 17, 2**31 - 1, 5, 42, 0, 9], dtype=np.int32)  # widened to int64 on the device
    np.testing.assert_array_equal(aug(xd, ids=cp.asarray(ids32), epoch=2, seed=11).get(),
                                  aug(x, ids=ids32, epoch=2, seed=11))
    np.testing.assert_array_equal(aug(xd, epoch=2, seed=11).get(), aug(x, epoch=2, seed=11))


@needs_cuda
def test_device_pipeline_runs_on_the_current_stream_without_host_sync(cp):
    aug = pipeline()
    x = rand((64, 3, 12, 10), 6)
    y = aug(x, ids=np.arange(64, dtype=np.int64) * 7, seed=1)
    xd = cp.asarray(x)
    cp.cuda.Device().synchronize()  # xd was written on the default stream, which `s` does not wait for
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        yd = aug(xd, ids=cp.arange(64, dtype=cp.int64) * 7, seed=1)
    s.synchronize()
    np.testing.assert_array_equal(yd.get(), y)


@needs_cuda
@pytest.mark.parametrize("prefetch", [False, True])
def test_loader_on_cuda_equals_loader_on_cpu_and_resumes(cp, prefetch):
    assert_loader_matches_cpu(cp, pipeline(), prefetch, "cuda:0")  # bit for bit: no lighting or affine


@needs_cuda
def test_loader_on_cuda_without_transform_copies_the_batch(cp):
    x, y = rand((9, 1, 4, 4), 8, np.float64), np.arange(9, dtype=np.int64)
    for (gx, gy), (cx, cy) in zip(D.DataLoader((x, y), 4, shuffle=True, seed=1, device="cuda"), D.DataLoader((x, y), 4, shuffle=True, seed=1)):
        assert gx.dtype == np.float64 and isinstance(gy, np.ndarray)   # labels stay on the host
        np.testing.assert_array_equal(gx.get(), cx)
        np.testing.assert_array_equal(gy, cy)


@needs_cuda
def test_loader_device_index_beyond_the_devices(cp):
    n = cnnkit.cuda.device_count()
    with pytest.raises(ValueError, match=rf"DataLoader: device must name one of the {n} CUDA device\(s\) .*got "
                                         rf"'cuda:{n}'"):
        D.DataLoader(_pair(), 4, device=f"cuda:{n}")
