"""GPU augmentation's Python glue (transforms on CuPy batches, DataLoader(device="cuda")) on the strict CuPy
stand-in of tests/helpers/fakecupy.py, which runs the pipeline with the CPU kernel behind the CUDA binding's own
interface (integer pointers). So these check the device paths' checks, copies, host reads and results, on any
machine; the CUDA kernels themselves are checked by tools/cuda_emu and tests/test_cuda_augment.py."""
from helpers import fakecupy
import numpy as np
import pytest

from cnnkit import data as D


@pytest.fixture
def cp(monkeypatch):
    return fakecupy.install(monkeypatch)


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


IDS = np.array([3, 17, 10**11, 5, 42, 0, 9], dtype=np.int64)
TRANSFORMS = [lambda: D.RandomHorizontalFlip(), lambda: D.RandomCrop((7, 9), padding=2),
              lambda: D.RandomResizedCrop((5, 12)), lambda: D.ColorJitter(0.4, 0.4, 0.4), lambda: D.PCALighting(0.1),
              lambda: D.RandomAffine(30.0, (0.2, 0.1), (0.8, 1.2), fill=0.5)]


def pipeline():
    return D.Compose([D.RandomResizedCrop(9, scale=(0.5, 1.0)), D.RandomHorizontalFlip(), D.CenterCrop(8),
                      D.ColorJitter(0.2, 0.3, 0.4), D.PCALighting(0.1), D.RandomCrop(8, padding=1)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", TRANSFORMS)
def test_transform_on_a_device_batch_stays_there_and_equals_the_cpu(cp, dtype, make):
    t = make()
    x = rand((len(IDS), 3, 10, 11), 1, dtype)
    y, params = t(x, ids=IDS, epoch=3, seed=7, return_params=True)
    xd = cp.asarray(x)
    with fakecupy.counting() as c:
        yd, paramsd = t(xd, ids=IDS, epoch=3, seed=7, return_params=True)
    assert isinstance(yd, cp.ndarray) and isinstance(paramsd, cp.ndarray)
    np.testing.assert_array_equal(yd.get(), y)
    np.testing.assert_array_equal(paramsd.get(), params)
    # one small copy for the numpy ids (and, once per device, the lighting matrices); nothing read back
    assert [n for n, _ in c.h2d] == [IDS.nbytes] + ([3 * 8, 9 * 8] if isinstance(t, D.PCALighting) else [])
    assert c.syncs == []
    with fakecupy.counting() as c:
        np.testing.assert_array_equal(t(xd, ids=cp.asarray(IDS), epoch=3, seed=7).get(), y)
    assert len(c.h2d) == 1  # the ids above; device ids and the cached matrices are not copied again


def test_compose_on_the_device_default_ids_make_no_copy(cp):
    aug = pipeline()
    x = rand((len(IDS), 3, 12, 10), 2)
    xd = cp.asarray(x)
    aug(xd)  # the lighting matrices move once
    with fakecupy.counting() as c:
        yd = aug(xd, epoch=1, seed=5)
    assert c.h2d == [] and c.syncs == []
    np.testing.assert_array_equal(yd.get(), aug(x, epoch=1, seed=5))
    ids32 = np.array([3, 17, 2**31 - 1, 5, 42, 0, 9], dtype=np.int32)
    np.testing.assert_array_equal(aug(xd, ids=cp.asarray(ids32), seed=5).get(), aug(x, ids=ids32, seed=5))


def test_device_batch_checks(cp):
    t = D.RandomHorizontalFlip()
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip: x must be C-contiguous \(use cupy\.ascontiguousarray\)"):
        t(cp.zeros((2, 3, 8, 8), np.float32)[:, :, :, ::2])
    with pytest.raises(TypeError, match="RandomHorizontalFlip: x must be float32 or float64, got int32"):
        t(cp.zeros((2, 3, 8, 8), np.int32))
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip: ids must have shape \(2,\) \(one index per sample\), "
                                         r"got \(3,\)"):
        t(cp.zeros((2, 3, 8, 8), np.float32), ids=cp.arange(3))
    with pytest.raises(TypeError, match="RandomHorizontalFlip: ids must hold integers, got dtype float64"):
        t(cp.zeros((2, 3, 8, 8), np.float32), ids=cp.zeros(2))
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip: ids must be >= 0, got -1"):  # numpy ids: checked
        t(cp.zeros((2, 3, 8, 8), np.float32), ids=np.array([0, -1]))


def assert_loader_matches_cpu(xp, aug, prefetch, device):
    """DataLoader(device=...) batches with transform `aug`, over an epoch and after a mid-epoch resume, equal
    the CPU loader's bit for bit (also run by tests/test_cuda_augment.py on a real GPU, with no lighting)."""
    x, y = rand((23, 3, 10, 10), 3), np.arange(23, dtype=np.int64) % 5
    cpu = list(D.DataLoader((x, y), 5, shuffle=True, seed=9, transform=aug, prefetch=prefetch))
    ld = D.DataLoader((x, y), 5, shuffle=True, seed=9, transform=aug, prefetch=prefetch, device=device)
    gpu = list(ld)
    assert len(gpu) == len(cpu) == 5
    for (cx, cy), (gx, gy) in zip(cpu, gpu):
        assert isinstance(gx, xp.ndarray) and isinstance(gy, np.ndarray)   # labels stay on the host
        np.testing.assert_array_equal(gx.get(), cx)
        np.testing.assert_array_equal(gy, cy)
    ld.load_state_dict({"epoch": 1, "batch": 2})
    ref = D.DataLoader((x, y), 5, shuffle=True, seed=9, transform=aug, prefetch=prefetch)
    ref.load_state_dict({"epoch": 1, "batch": 2})
    rest = list(zip(ld, ref))
    assert len(rest) == 3
    for (gx, gy), (cx, cy) in rest:
        np.testing.assert_array_equal(gx.get(), cx)
        np.testing.assert_array_equal(gy, cy)
    assert ld.state_dict() == ref.state_dict()


@pytest.mark.parametrize("prefetch", [False, True])
def test_loader_on_the_device_equals_the_cpu_loader_and_resumes(cp, prefetch):
    assert_loader_matches_cpu(cp, pipeline(), prefetch, "cuda")


@pytest.mark.parametrize("prefetch", [False, True])
def test_loader_on_the_device_copies_x_and_ids_once_per_batch_and_reads_nothing_back(cp, prefetch):
    x, y = rand((23, 3, 10, 10), 3), np.arange(23, dtype=np.int64) % 5
    aug = pipeline()
    list(D.DataLoader((x, y), 5, shuffle=True, seed=9, transform=aug, device="cuda:0"))  # the lighting matrices move once
    with fakecupy.counting() as c:
        sizes = [len(by) for _, by in D.DataLoader((x, y), 5, shuffle=True, seed=9, transform=aug, prefetch=prefetch, device="cuda")]
    assert c.syncs == []
    assert sorted(n for n, _ in c.h2d) == sorted([bs * x[0].nbytes for bs in sizes] + [bs * 8 for bs in sizes])


def test_loader_on_the_device_without_transform(cp):
    x, y = rand((9, 1, 4, 4), 4, np.float64), np.arange(9, dtype=np.int64)
    batches = list(D.DataLoader((x, y), 4, shuffle=True, seed=1, device="cuda"))
    for (gx, gy), (cx, cy) in zip(batches, D.DataLoader((x, y), 4, shuffle=True, seed=1)):
        assert isinstance(gx, cp.ndarray) and gx.dtype == np.float64 and isinstance(gy, np.ndarray)
        np.testing.assert_array_equal(gx.get(), cx)
        np.testing.assert_array_equal(gy, cy)
    with pytest.raises(ValueError, match=r"DataLoader: device must name one of the 1 CUDA device\(s\) \(cuda:0 to "
                                         r"cuda:0\), got 'cuda:1'"):
        D.DataLoader((x, y), 4, device="cuda:1")
