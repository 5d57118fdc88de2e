# Runtime surface: build_info() contents, set/get_num_threads (validation and round trip, restored by the
# `threads` fixture), the public op names and signatures cnnkit promises, CUDA status on any machine,
# and `import cnnkit` from a directory outside the source tree (in a child process).
import importlib.metadata
import inspect
import os

import pytest

import cnnkit

_THREADS_AT_IMPORT = cnnkit.get_num_threads()


def test_build_info_contents():
    info = cnnkit.build_info()
    assert isinstance(info, dict)
    assert {"cuda", "isa", "isa_supported", "openmp", "version"} <= set(info)
    assert isinstance(info["cuda"], bool)
    assert info["version"] == cnnkit.__version__ == importlib.metadata.version("cnnkit")
    assert info["isa"] in info["isa_supported"].split(",")
    assert isinstance(info["openmp"], str) and info["openmp"]
    assert info["cuda_available"] is cnnkit.cuda.is_available()
    assert info["num_threads"] == cnnkit.get_num_threads()


def test_set_get_num_threads_round_trip(threads):
    for n in (1, 2, 3, 1):
        threads(n)
        assert cnnkit.get_num_threads() == n
        assert cnnkit.build_info()["num_threads"] == n


def test_thread_count_is_restored_by_the_fixture():
    # Runs after the round trip above (file order), which left 1 set: the fixture put the old count back.
    assert cnnkit.get_num_threads() == _THREADS_AT_IMPORT


@pytest.mark.parametrize("n, exc, match", [
    (0, ValueError, r"set_num_threads: n must be >= 1, got 0"),
    (-2, ValueError, r"set_num_threads: n must be >= 1, got -2"),
    (1.5, TypeError, r"set_num_threads: n must be an int, got float"),
    (True, TypeError, r"set_num_threads: n must be an int, got bool"),
    ("2", TypeError, r"set_num_threads: n must be an int, got str"),
])
def test_set_num_threads_rejects(n, exc, match, threads):
    before = cnnkit.get_num_threads()
    with pytest.raises(exc, match=match):
        threads(n)
    assert cnnkit.get_num_threads() == before


# The public names; tests and users depend on them, so their parameters are pinned here.
SIGNATURES = {
    "conv2d_fwd": ["x", "w", "b", "stride", "padding", "dilation", "groups"],
    "conv2d_bwd_data": ["dy", "w", "x_shape", "stride", "padding", "dilation", "groups"],
    "conv2d_bwd_weight": ["dy", "x", "w_shape", "stride", "padding", "dilation", "groups"],
    "maxpool2d_fwd": ["x", "kernel_size", "stride", "padding", "dilation", "ceil_mode"],
    "maxpool2d_bwd": ["dy", "indices", "x_shape"],
    "dropout_fwd": ["x", "p", "seed", "offset"],
    "dropout_bwd": ["dy", "mask", "p"],
    "relu_fwd": ["x"],
    "relu_bwd": ["dy", "y"],
}


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_public_op_signature(name):
    fn = getattr(cnnkit.ops, name)
    params = list(inspect.signature(fn).parameters)
    assert params[:len(SIGNATURES[name])] == SIGNATURES[name]
    assert name in cnnkit.ops.__all__


def test_cuda_status_on_any_machine():
    status = cnnkit.cuda.status()
    assert isinstance(status, str) and status.strip()
    assert cnnkit.cuda.is_available() is (status == "ok")
    count = cnnkit.cuda.device_count()
    assert isinstance(count, int) and count >= 0
    if not cnnkit.build_info()["cuda"]:
        assert count == 0 and "without CUDA" in status


def test_import_from_outside_the_source_tree(run_isolated, tmp_path):
    res = run_isolated("""
        import os, numpy as np, cnnkit
        y = cnnkit.ops.relu_fwd(np.array([-1.0, 2.0]))
        assert y.tolist() == [0.0, 2.0], y
        print(os.getcwd())
        print(cnnkit.__file__)
        print(cnnkit._C.__file__)
        print(cnnkit.cuda.status())
    """)
    assert res.returncode == 0, res.stderr
    cwd, pkg, ext, status = res.stdout.strip().splitlines()[:4]
    assert _under(cwd, tmp_path)
    assert not _under(pkg, tmp_path) and pkg.endswith("__init__.py")
    assert "_C" in ext and status.strip()


def _under(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root + os.sep)


# The augmentation constants of csrc/ops/augment.h (kAugRecord, enum AugKind), exported so that Python reads
# them instead of copying the numbers.
_AUG_KINDS = {"hflip": 1, "crop": 2, "resized_crop": 3, "jitter": 4, "lighting": 5, "affine": 6}


def test_augmentation_constants_are_exported():
    from cnnkit import _C

    assert _C.aug_record == 16
    assert _C.aug_kinds == _AUG_KINDS


def test_transforms_use_the_exported_stage_kinds():
    from cnnkit import _C
    from cnnkit.data import transforms as T
    from cnnkit.ops import _cuda

    classes = {"hflip": T.RandomHorizontalFlip, "crop": T.RandomCrop, "resized_crop": T.RandomResizedCrop,
               "jitter": T.ColorJitter, "lighting": T.PCALighting, "affine": T.RandomAffine}
    assert {name: cls.kind for name, cls in classes.items()} == _C.aug_kinds
    # the Philox stream word keeps 4 bits for the kind
    assert all(1 <= k <= 15 for k in _C.aug_kinds.values())
    assert getattr(_cuda, "_AUG_RECORD", _C.aug_record) == _C.aug_record
