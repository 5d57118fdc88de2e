# `cnnkit train`: the main job end to end (run folder contents, test accuracy), and config errors that
# name the offending key.
import gzip
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from helpers.dataset_files import RNG, cifar_py_batch, cifar_records, idx_bytes

from cnnkit import config as ck_config
from cnnkit import run as ck_run


def test_cnnkit_train_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "run.toml"
    cfg.write_text('epochs = 6\nseed = 0\n[optimizer]\nname = "Adam"\nlr = 0.002\n')
    r = subprocess.run([sys.executable, "-m", "cnnkit", "train", "--config", str(cfg), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    names = set(os.listdir(out))
    assert {"history.json", "result.json", "model.safetensors", "checkpoints", "loss.png", "accuracy.png",
            "lr.png", "ratios.png", "filters.png"} <= names
    result = json.loads((out / "result.json").read_text())
    assert result["test_acc"] > 0.95 and result["epochs_run"] == 6
    assert os.path.exists(out / "checkpoints" / "latest.json")
    assert "test accuracy" in r.stdout and len(r.stdout.splitlines()) < 40  # not a line per iteration


@pytest.mark.parametrize("text,match", [
    ("epochz = 3\n", r"unknown key 'epochz'"),
    ("[optimizer]\nlrr = 0.1\n", r"unknown key 'optimizer.lrr'"),
    ("[optimizer]\nlr = 'fast'\n", r"'optimizer.lr' must be a number"),
    ("epochs = 0\n", r"'epochs' must be >= 1"),
    ("epochs = 2.5\n", r"'epochs' must be an integer"),
    ("[optimizer]\nname = 'Adamax'\n", r"'optimizer.name' is unknown: 'Adamax'"),
    ("[optimizer]\nname = 'SGD'\nlr = -1.0\n", r"config: 'optimizer' \(SGD\): .*lr"),
    ("[schedule]\nname = 'Wobbly'\n", r"'schedule.name' is unknown"),
    ("[data]\ndataset = 'imagenet'\n", r"'data.dataset' is unknown: 'imagenet'; expected one of digits, mnist, "
                                       r"fashion_mnist, cifar10, cifar100"),
    ("[data]\ndataset = 'cifar10'\n", r"'data.path' is required"),
    ("[data]\ndataset = 'cifar100'\n", r"'data.path' is required for dataset 'cifar100'"),
    ("[data]\ndataset = 'mnist'\npath = 'nowhere'\n", r"config: 'data' \(mnist at 'data.path' 'nowhere'\): nowhere: "
                                                    r"none of train-images-idx3-ubyte\[\.gz\]"),
    ("[data]\ndataset = 'cifar100'\npath = '.'\nlabel_mode = 'both'\n", r"config: 'data' \(cifar100 at 'data.path' "
                                                                       r"'\.'\): load_cifar100: label_mode must be"),
    ("[data]\nlabel_mode = 'coarse'\n", r"'data.label_mode' applies only to dataset 'cifar100', not 'digits'"),
    ("[model]\nlayers = [{type = 'Conv9d'}]\n", r"'model.layers\[0\].type' is not a cnnkit layer"),
    ("[model]\nlayers = [{type = 'Linear', args = [64]}]\n", r"'model.layers\[0\]' \(Linear\)"),
    ("epochs = [\n", r"is not valid TOML"),
    ("[data]\nnormalize = 'sparkle'\n", r"'data.normalize' is unknown: 'sparkle'"),
    ("[model]\nzoo = 'resnet9000'\n", r"'model.zoo' names an unknown architecture 'resnet9000'"),
    ("[data]\naugment = [{type = 'Rotate90'}]\n", r"'data.augment\[0\].type' is not a cnnkit augmentation"),
    ("[data]\naugment = [{type = 'RandomCrop', args = [8], padding = -1}]\n", r"'data.augment\[0\]' \(RandomCrop\)"),
])
def test_config_errors_name_the_key(tmp_path, text, match):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ck_config.ConfigError, match=match):
        c = ck_config.load_config(str(cfg), {"out": str(tmp_path / "o")})
        ck_run.build_augmentation(c)
        tr, va, te = ck_run.load_dataset(c)
        ck_run.preprocess(c, tr, va, te, str(tmp_path / "o"))
        model = ck_run.build_model(c)
        ck_run.build_optimizer(c, model.parameters())
        ck_run.build_schedule(c, ck_run.build_optimizer(c, model.parameters()), 10)
        ck_run.load_dataset(c)


def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[optimizer]\nlrr = 0.1\n")
    r = subprocess.run([sys.executable, "-m", "cnnkit", "train", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "unknown key 'optimizer.lrr'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["train", "search"])
def test_cli_missing_or_unreadable_config_is_a_config_error(tmp_path, command):
    for path, reason in [(tmp_path / "nope.toml", "No such file or directory"), (tmp_path, "Is a directory")]:
        r = subprocess.run([sys.executable, "-m", "cnnkit", command, "--config", str(path)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and f"config: cannot read {path}: {reason}" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_augmentation_and_normalisation_from_a_config(tmp_path):
    cfg = ck_config.load_config(None, {"out": str(tmp_path / "r"), "epochs": 3})
    cfg["data"].update(normalize="channel_std", augment=[{"type": "RandomCrop", "args": [8], "padding": 1},
                                                         {"type": "RandomHorizontalFlip", "p": 0.0}])
    trainer, result = ck_run.run_training(cfg, log=lambda *a: None, progress=False)
    assert result["test_acc"] > 0.8
    from safetensors.numpy import load_file
    saved = load_file(str(tmp_path / "r" / "preprocessor.safetensors"))
    import cnnkit as ck
    x = ck.data.load_digits()["train"].x
    means = [np.asarray(v).ravel() for v in saved.values()]
    assert any(np.allclose(m, x.mean(axis=(0, 2, 3)), rtol=1e-5) for m in means)  # fitted on the train split


def test_a_zoo_model_from_a_config(tmp_path):
    cfg = ck_config.load_config(None, {"out": str(tmp_path / "r"), "epochs": 2})
    cfg["model"] = {"zoo": "resnet20", "in_channels": 1, "num_classes": 10}
    trainer, result = ck_run.run_training(cfg, log=lambda *a: None, progress=False)
    assert type(trainer.model).__name__ != "Sequential" and "layer1.0.conv1.weight" in dict(trainer.model.named_parameters())
    assert result["test_acc"] > 0.5


# ---------------------------------------------------------------- examples/configs: one per dataset the CLI offers

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "examples" / "configs"


def _write_idx(root):
    root.mkdir(parents=True)
    for stem, n in (("train", 20), ("t10k", 6)):
        x = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = RNG.integers(0, 10, n).astype(np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            (root / f"{stem}-{kind}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(arr)))


def _write_cifar10_py(root):
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(cifar_py_batch(4)[2])  # Python 2 pickles, as the originals


def _write_cifar100_bin(root):
    root.mkdir(parents=True)
    for split, n in (("train", 20), ("test", 6)):
        (root / f"{split}.bin").write_bytes(cifar_records(n, label_bytes=2, max_label=20)[2])


# dataset -> (writes a few images in the real format at data.path, "N train / N val / N test images of SHAPE")
DATA_WRITERS = {"digits": (None, "1197 train / 300 val / 300 test images of (1, 8, 8)"),
                "mnist": (_write_idx, "18 train / 2 val / 6 test images of (1, 28, 28)"),
                "fashion_mnist": (_write_idx, "18 train / 2 val / 6 test images of (1, 28, 28)"),
                "cifar10": (_write_cifar10_py, "18 train / 2 val / 4 test images of (3, 32, 32)"),
                "cifar100": (_write_cifar100_bin, "18 train / 2 val / 6 test images of (3, 32, 32)")}


def test_every_dataset_the_cli_offers_has_an_example_config():
    offered = {ck_config.read_toml(p)["data"]["dataset"] for p in CONFIGS.glob("*.toml")}
    assert offered == set(ck_run.DATASETS) == set(DATA_WRITERS)


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_example_config_trains_an_epoch_on_files_in_the_real_format(tmp_path, name):
    config = CONFIGS / f"{name}.toml"
    data = ck_config.read_toml(config)["data"]
    assert data["dataset"] == name
    write, summary = DATA_WRITERS[name]
    if write is not None:
        write(tmp_path / data["path"])  # the config's own relative path, from the folder the run starts in
    r = subprocess.run([sys.executable, "-m", "cnnkit", "train", "--config", str(config), "--epochs", "1", "--out",
                        "run", "--no-plots", "--threads", "1"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert summary in r.stdout
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs_run"] == 1 and 0.0 <= result["test_acc"] <= 1.0 and np.isfinite(result["test_loss"])
    assert result["config"]["data"] == ck_config.load_config(str(config))["data"]


def test_a_schedule_with_warmup_from_a_config(tmp_path):
    # schedule.warmup wraps the named schedule in LinearWarmup: warmup_steps at a linearly rising lr, then
    # the named schedule from its own start, as ck.schedules.LinearWarmup(opt, Step(None, ...), 3) does.
    import cnnkit as ck
    cfg = tmp_path / "warm.toml"
    cfg.write_text("[optimizer]\nname = 'SGD'\nlr = 0.1\n"
                   "[schedule]\nname = 'Step'\nstep_size = 2\ngamma = 0.5\nwarmup = 3\n")
    c = ck_config.load_config(str(cfg), {"out": str(tmp_path / "o")})
    model = ck_run.build_model(c)
    opt = ck_run.build_optimizer(c, model.parameters())
    sched, interval = ck_run.build_schedule(c, opt, 10)
    assert isinstance(sched, ck.schedules.LinearWarmup) and sched.optimizer is opt and interval == "epoch"
    twin_opt = ck.optim.SGD([ck.Parameter(np.zeros(1, np.float32))], lr=0.1)
    twin = ck.schedules.LinearWarmup(twin_opt, ck.schedules.Step(None, step_size=2, gamma=0.5), 3)
    lrs, want = [], []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        want.append(twin_opt.param_groups[0]["lr"])
        sched.step()
        twin.step()
    assert lrs == want
    assert lrs[0] < lrs[2] < lrs[3] == 0.1 and lrs[5] == 0.05
