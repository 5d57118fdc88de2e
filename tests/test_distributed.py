# cnnkit.distributed: the sampler against torch's DistributedSampler, two ranks against one process with the
# whole batch (float64 1e-12, float32 1e-5), SyncBatchNorm against BatchNorm on the whole batch, a rank that
# dies, raises or hangs (the job ends in bounded time, the checkpoint loads), resume with another rank count,
# `cnnkit train` under mpiexec, search on MPIPoolExecutor and Dask, and the core without mpi4py.
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnnkit as ck
from cnnkit.distributed import DistributedSampler, rescale_position

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "dist_scripts"
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
sys.path.insert(0, str(SCRIPTS))
from common import B, STEPS, convnet, data  # noqa: E402

# The scripts import cnnkit from wherever this process did (installed, editable or the caller's PYTHONPATH),
# never from the source tree's python/ folder, which holds no compiled modules.
_PATH = os.pathsep.join([str(SCRIPTS)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))

needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found (pip install \"cnnkit[mpi]\")")


def run_mpi(n, args, tmp_path, timeout=120, module=None):
    """Run a script of tests/dist_scripts under `mpiexec -n n` (one thread per rank); -> (CompletedProcess,
    seconds). A hang is a TimeoutExpired: the test fails instead of waiting forever."""
    pytest.importorskip("mpi4py")
    env = dict(os.environ, OMP_NUM_THREADS="1", CNNKIT_DIST_TIMEOUT="60", PYTHONPATH=_PATH)
    head = [MPIEXEC, "-n", str(n), sys.executable] + (["-m", module] if module else [])
    t0 = time.monotonic()
    p = subprocess.run(head + [str(a) for a in args], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=timeout)
    return p, time.monotonic() - t0


def run_one(args, tmp_path, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=_PATH)
    p = subprocess.run([sys.executable] + [str(a) for a in args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


# ---------------------------------------------------------------- sharding (no MPI needed)

@pytest.mark.parametrize("n,world,drop_last", [(10, 3, False), (10, 3, True), (12, 4, False), (7, 2, False),
                                               (5, 8, False)])
def test_sampler_takes_torch_distributed_sampler_positions(n, world, drop_last):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler as TorchSampler
    order = ck.data.loader.epoch_permutation(n, 3, 1)
    for r in range(world):
        ts = TorchSampler(range(n), num_replicas=world, rank=r, shuffle=False, drop_last=drop_last)
        want = order[np.array(list(ts), dtype=np.int64)]
        s = DistributedSampler(r, world, drop_last=drop_last)
        np.testing.assert_array_equal(s(order), want)
        assert s.num_samples(n) == len(ts)
    del torch


def test_shards_of_one_step_together_are_the_one_process_batch():
    x = np.arange(40, dtype=np.float32).reshape(40, 1)
    y = np.arange(40)
    world, b = 2, 4
    one = list(ck.data.DataLoader((x, y), b * world, shuffle=True, seed=9, prefetch=False))
    ranks = []
    for r in range(world):
        ld = ck.data.DataLoader((x, y), b, shuffle=True, seed=9, prefetch=False)
        ld.sampler = DistributedSampler(r, world)
        assert len(ld) == len(one)
        ranks.append(list(ld))
    for step, (_, ys) in enumerate(one):
        got = np.empty_like(ys)
        for r in range(world):
            got[r::world] = ranks[r][step][1]      # rank r holds positions r, r+N, ... of the batch
        np.testing.assert_array_equal(got, ys)


def test_eval_shards_without_padding_cover_every_sample_once():
    order = np.arange(11)
    parts = [DistributedSampler(r, 3, pad=False)(order) for r in range(3)]
    assert [DistributedSampler(r, 3, pad=False).num_samples(11) for r in range(3)] == [len(p) for p in parts]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), order)


def test_rescale_position_keeps_the_samples_done():
    st = {"epoch": 1, "batch": 3, "batch_size": 8, "n": 100, "drop_last": False, "seed": 0, "shuffle": True}
    assert rescale_position(st, 2, 2) is st
    assert rescale_position(st, 2, 1)["batch"] == 6            # 48 samples = 6 one-process steps of 8
    assert rescale_position(st, 2, 4)["batch"] == 2            # 48 samples -> 2 steps of 4 x 8 (rounded up)
    assert rescale_position(dict(st, batch=7), 2, 4)["batch"] == 4   # clamped to the 4 steps of an epoch


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(ValueError, match="need 0 <= rank < world_size, got rank 2, world_size 2"):
        DistributedSampler(2, 2)
    model = convnet(np.float32)
    with pytest.raises(TypeError, match="Trainer: distributed must be True or False, got str"):
        ck.Trainer(model, ck.optim.SGD(model.parameters(), lr=0.1), distributed="yes")
    with pytest.raises(RuntimeError, match="call ck.distributed.init"):
        ck.distributed.context()
    assert ck.distributed.world_size() == 1 and ck.distributed.rank() == 0 and ck.distributed.is_main()


def test_core_imports_without_mpi4py_and_init_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import cnnkit as ck\n"
            "try:\n    ck.distributed.init()\nexcept ImportError as e:\n    print('ERR', e)\n")
    p = run_one(["-c", code], tmp_path)
    assert 'ERR cnnkit.distributed needs mpi4py and an MPI library: pip install "cnnkit[mpi]"' in p.stdout


# ---------------------------------------------------------------- two ranks == one process

@needs_mpi
@pytest.mark.parametrize("dtype,tol,kind", [("float64", 1e-12, "convnet"), ("float32", 1e-5, "convnet"),
                                            ("float64", 1e-12, "graph"), ("float64", 1e-12, "module")])
def test_two_ranks_equal_one_process_with_the_double_batch(tmp_path, dtype, tol, kind):
    # a Sequential, a Graph with a residual Add, and a ck.Module (its recorded backward)
    run_one([SCRIPTS / "train_equal.py", "single", dtype, "one", kind], tmp_path)
    p, _ = run_mpi(2, [SCRIPTS / "train_equal.py", "dist", dtype, "two", kind], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    one, r0, r1 = (np.load(tmp_path / f) for f in ("one.npz", "two.0.npz", "two.1.npz"))
    info = json.loads((tmp_path / "two.0.json").read_text())
    assert info["steps"] == STEPS and info["buckets"] >= 2
    assert info["started_in_backward"] == info["buckets"]      # every bucket overlapped the backward
    for k in one:
        np.testing.assert_array_equal(r0[k], r1[k])            # the ranks hold one model
        assert _rel(r0[k], one[k]) < tol, k
    losses = json.loads((tmp_path / "one.json").read_text())["loss"]
    np.testing.assert_allclose(info["loss"], losses, rtol=tol)    # the logged loss: the mean over both ranks


@needs_mpi
def test_device_gradients_go_through_nccl_and_equal_the_cpu_run(tmp_path):
    # on the CuPy stand-in, whose "device" memory is host memory, with a cupy.cuda.nccl stand-in over MPI
    p, _ = run_mpi(2, [SCRIPTS / "train_equal.py", "dist", "float64", "cpu"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    p, _ = run_mpi(2, [SCRIPTS / "train_equal.py", "dist", "float64", "gpu", "fakegpu"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    cpu, gpu = np.load(tmp_path / "cpu.0.npz"), np.load(tmp_path / "gpu.0.npz")
    for k in cpu:
        np.testing.assert_array_equal(gpu[k], cpu[k])
    info = json.loads((tmp_path / "gpu.0.json").read_text())
    # one broadcast of the flat parameters; per step the loss sums and every bucket
    assert info["nccl"] == {"bcast": 1, "allReduce": STEPS * (1 + info["buckets"])}
    assert len(info["syncs"]) < STEPS // 2          # no host read per step: the losses are read in batches


@needs_mpi
def test_sync_batchnorm_equals_batchnorm_on_the_whole_batch(tmp_path):
    p, _ = run_mpi(2, [SCRIPTS / "sync_bn.py", "sbn.npz"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    d = np.load(tmp_path / "sbn.npz")
    for tag in ("4d", "2d"):
        for k in ("y", "dx", "dw", "db", "running_mean", "running_var"):
            assert _rel(d[f"{tag}/{k}"], d[f"{tag}/ref_{k}"]) < 1e-12, (tag, k)


@needs_mpi
def test_training_with_sync_batchnorm_equals_one_process(tmp_path):
    run_one([SCRIPTS / "train_equal.py", "single", "float64", "one", "bn"], tmp_path)
    p, _ = run_mpi(2, [SCRIPTS / "train_equal.py", "dist", "float64", "two", "bn"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for suffix in ("", ".buffers"):
        one, r0 = np.load(tmp_path / f"one{suffix}.npz"), np.load(tmp_path / f"two.0{suffix}.npz")
        for k in one:
            if k.endswith("num_batches_tracked"):
                assert int(r0[k]) == int(one[k]) == STEPS
                continue
            assert _rel(r0[k], one[k]) < 1e-12, k


# ---------------------------------------------------------------- failures

@needs_mpi
@pytest.mark.parametrize("how", ["kill", "exit", "raise", "hang"])
def test_a_failing_rank_ends_the_job_and_the_checkpoint_loads(tmp_path, how):
    p, seconds = run_mpi(2, [SCRIPTS / "train_fail.py", how, "ckpt"], tmp_path, timeout=90)
    assert p.returncode != 0
    assert seconds < 60          # bounded: the watchdog is 3 s in the script; no hang until the timeout
    if how == "raise":
        assert "rank 1/2 failed; aborting all ranks" in p.stderr and "rank 1 was told to fail" in p.stderr
    if how == "hang":
        assert "rank 0/2: the step's loss reduction did not complete within 3 s" in p.stderr
    model = convnet(np.float32)
    trainer = ck.Trainer(model, ck.optim.SGD(model.parameters(), lr=0.05), progress=False)
    state = trainer.load_checkpoint(tmp_path / "ckpt")
    assert state["step"] == 20 and state["world_size"] == 2     # the last one written before step 23


@needs_mpi
def test_resume_with_the_same_ranks_is_exact_and_with_fewer_completes(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(
        "import json, sys, numpy as np, cnnkit as ck\n"
        "from common import B, convnet, data, save_params\n"
        "ck.set_num_threads(1)\n"
        "epochs, out, resume = int(sys.argv[1]), sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)\n"
        "dist = ck.distributed.launched_world_size() > 1\n"
        "model = convnet(np.float64)\n"
        "t = ck.Trainer(model, ck.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), progress=False,\n"
        "               distributed=dist)\n"
        "t.fit(data(np.float64, steps=10), epochs=epochs, batch_size=B, checkpoint_dir=out + '-ckpt',\n"
        "      resume=resume)\n"
        "if ck.distributed.is_main():\n"
        "    save_params(model, out + '.npz')\n"
        "    open(out + '.json', 'w').write(json.dumps({'step': t.step, 'epochs': len(t.history.epochs)}))\n")
    for args in ([2, "full"], [1, "half"], [2, "again", "half-ckpt"]):
        p, _ = run_mpi(2, [script, *args], tmp_path)
        assert p.returncode == 0, p.stderr[-3000:]
    full, again = np.load(tmp_path / "full.npz"), np.load(tmp_path / "again.npz")
    for k in full:
        np.testing.assert_array_equal(again[k], full[k])     # same ranks: bit for bit
    p, _ = run_mpi(1, [script, 2, "one", "half-ckpt"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    one = np.load(tmp_path / "one.npz")
    assert all(np.isfinite(one[k]).all() for k in one)
    # epoch 1 on 2 ranks: 10 steps of 2 x 8 images; epoch 2 on 1 process: 20 steps of 8
    assert json.loads((tmp_path / "one.json").read_text()) == {"step": 30, "epochs": 2}
    assert json.loads((tmp_path / "full.json").read_text()) == {"step": 20, "epochs": 2}


# ---------------------------------------------------------------- the command line and the search

@needs_mpi
def test_cnnkit_train_under_mpiexec_is_data_parallel(tmp_path):
    p, _ = run_mpi(2, ["train", "--epochs", "1", "--threads", "1", "--out", "run", "--no-plots"], tmp_path, module="cnnkit")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "x 2 ranks" in p.stdout and p.stdout.count("epoch 1/1:") == 1      # rank 0 alone prints
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["world_size"] == 2 and result["test_acc"] > 0.5
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(hist["epochs"]) == 1


@needs_mpi
def test_search_runs_on_mpi_pool_executor_workers(tmp_path):
    from objectives import SPACE, bowl
    from cnnkit.search import coarse_to_fine
    pytest.importorskip("mpi4py.futures")
    p, _ = run_mpi(3, [SCRIPTS / "search_mpi.py", "out.json"], tmp_path, module="mpi4py.futures")
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    serial = coarse_to_fine(bowl, SPACE, coarse_trials=6, coarse_epochs=1, fine_trials=3, fine_epochs=2, seed=5,
                            workers=1)
    assert [t["params"] for t in got["trials"]] == [t["params"] for t in serial.trials]
    assert [t["val_acc"] for t in got["trials"]] == [t["val_acc"] for t in serial.trials]
    assert got["main_pid"] not in {t["pid"] for t in got["trials"]}      # the trials ran on the worker ranks


def test_search_runs_on_a_local_dask_cluster():
    dd = pytest.importorskip("dask.distributed")
    from objectives import SPACE, bowl
    from cnnkit.search import random_search
    with dd.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            dd.Client(cluster) as client:
        got = random_search(bowl, SPACE, trials=5, epochs=1, seed=2, executor=client.get_executor())
    serial = random_search(bowl, SPACE, trials=5, epochs=1, seed=2, workers=1)
    assert [t["val_acc"] for t in got.trials] == [t["val_acc"] for t in serial.trials]


def test_search_executor_must_be_an_executor():
    from objectives import SPACE, bowl
    from cnnkit.search import random_search
    with pytest.raises(TypeError, match="search: executor must be a concurrent.futures.Executor, got list"):
        random_search(bowl, SPACE, trials=2, executor=[])


def test_one_rank_distributed_equals_a_plain_run(threads):
    pytest.importorskip("mpi4py")
    threads(1)
    x, y = data(np.float64, steps=5, world=1)
    runs = []
    try:
        for dist in (False, True):
            if dist:
                assert ck.distributed.init(timeout=30) == 1
            ck.manual_seed(0)
            model = convnet(np.float64)
            t = ck.Trainer(model, ck.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), progress=False,
                           distributed=dist)
            t.fit((x, y), epochs=1, batch_size=B)
            runs.append({n: p.data.copy() for n, p in model.named_parameters()})
        for k in runs[0]:
            np.testing.assert_array_equal(runs[1][k], runs[0][k])
    finally:
        ck.distributed.shutdown()


@pytest.mark.parametrize("value", [0, "2", 1.5])
def test_a_tampered_world_size_is_a_checkpoint_error(tmp_path, value):
    x, y = data(np.float32, steps=2, world=1)
    model = convnet(np.float32)
    ck.Trainer(model, ck.optim.SGD(model.parameters(), lr=0.05), progress=False).fit(
        (x, y), epochs=1, batch_size=B, checkpoint_dir=tmp_path)
    name = json.loads((tmp_path / "latest.json").read_text())["checkpoint"]
    doc = json.loads((tmp_path / name).read_text())
    assert doc["state"]["world_size"] == 1
    doc["state"]["world_size"] = value
    (tmp_path / name).write_text(json.dumps(doc))
    model = convnet(np.float32)
    with pytest.raises(ck.train.CheckpointError, match=r"state\.world_size"):
        ck.Trainer(model, ck.optim.SGD(model.parameters(), lr=0.05), progress=False).load_checkpoint(tmp_path)


def test_sync_batchnorm_without_init_is_batchnorm_and_saves_and_loads(tmp_path, rng):
    model = convnet(np.float64, bn=True)
    x = rng.standard_normal((6, 1, 8, 8))
    want = model(x)
    ck.distributed.convert_sync_batchnorm(model)
    kinds = [type(layer).__name__ for _, layer in model.named_layers()]
    assert kinds.count("SyncBatchNorm") == 2 and "BatchNorm2d" not in kinds
    model.train()
    np.testing.assert_allclose(model(x), want, rtol=1e-13, atol=1e-13)   # the same batch statistics
    model.save(tmp_path / "m.safetensors")
    back = ck.load(tmp_path / "m.safetensors")
    assert [type(layer).__name__ for _, layer in back.named_layers()] == kinds
    back.eval()
    model.eval()
    np.testing.assert_array_equal(back(x), model(x))
