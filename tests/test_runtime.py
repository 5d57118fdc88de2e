# Runtime surface: build_info() contents, set/get_num_threads (validation and round trip, restored by the
# `threads` fixture), the public op names and signatures cnnkit promises, CUDA status on any machine,
# `import cnnkit` from a directory outside the source tree (in a child process), and the malloc policy
# (CNNKIT_MALLOC) that keeps a training loop from faulting its memory in again every step.
import importlib.metadata
import inspect
import os
import subprocess
import sys
import textwrap

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


_STEADY_FAULTS = """
    import resource, sys, numpy as np, cnnkit as ck
    ck.set_num_threads(1)
    net = ck.Sequential(ck.Conv2d(3, 16, 3, padding=1), ck.BatchNorm2d(16), ck.ReLU(),
                        ck.Conv2d(16, 16, 3, padding=1), ck.BatchNorm2d(16), ck.ReLU(),
                        ck.GlobalAvgPool2d(), ck.Flatten(), ck.Linear(16, 10))
    opt = ck.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    y = np.arange(16) % 10
    def step():
        opt.zero_grad()
        _, d = ck.losses.softmax_cross_entropy(net.forward(x), y)
        net.backward(d)
        opt.step()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print(ck.build_info()["malloc"])
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def _child_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "CNNKIT_MALLOC"}
    return {**env, **extra}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and ru_minflt are Linux's")
def test_a_training_loop_reuses_its_memory_instead_of_faulting_pages_in_every_step(tmp_path):
    # each step allocates and frees about 2 MiB per activation and gradient (16x16x32x32 float32), some
    # 30 MiB in all, i.e. some 7,000 pages: with glibc's default thresholds every step faulted most of them
    # in again; with the memory kept for reuse a steady step faults (almost) none
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(_STEADY_FAULTS)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=_child_env(OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    policy, faults = r.stdout.split()
    assert policy == "retain"
    assert float(faults) < 100


@pytest.mark.parametrize("env, want", [({"CNNKIT_MALLOC": "default"}, "default"),
                                       ({"MALLOC_TRIM_THRESHOLD_": "1000000"}, "default (the environment sets "
                                                                                 "glibc's malloc tunables)")])
def test_cnnkit_malloc_default_and_a_users_own_malloc_settings_leave_glibc_alone(env, want):
    r = subprocess.run([sys.executable, "-c", "import cnnkit; print(cnnkit.build_info()['malloc'])"],
                       capture_output=True, text=True, timeout=120, env=_child_env(**env))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == want


def test_a_bad_cnnkit_malloc_fails_at_import_naming_the_choices():
    r = subprocess.run([sys.executable, "-c", "import cnnkit"], capture_output=True, text=True, timeout=120,
                       env=_child_env(CNNKIT_MALLOC="big"))
    assert r.returncode != 0
    assert "CNNKIT_MALLOC must be 'retain' or 'default', got 'big'" in r.stderr
