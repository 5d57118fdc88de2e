# `cnnkit train`: the main job end to end (run folder contents, test accuracy), and config errors that
# name the offending key.
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnkit import cli


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
    ("[data]\ndataset = 'imagenet'\n", r"'data.dataset' is unknown"),
    ("[data]\ndataset = 'cifar10'\n", r"'data.path' is required"),
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
    with pytest.raises(cli.ConfigError, match=match):
        c = cli.load_config(str(cfg), {"out": str(tmp_path / "o")})
        cli.build_augmentation(c)
        tr, va, te = cli.load_dataset(c)
        cli.preprocess(c, tr, va, te, str(tmp_path / "o"))
        model = cli.build_model(c)
        cli.build_optimizer(c, model.parameters())
        cli.build_schedule(c, cli.build_optimizer(c, model.parameters()), 10)
        cli.load_dataset(c)


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
    cfg = cli.load_config(None, {"out": str(tmp_path / "r"), "epochs": 3})
    cfg["data"].update(normalize="channel_std", augment=[{"type": "RandomCrop", "args": [8], "padding": 1},
                                                         {"type": "RandomHorizontalFlip", "p": 0.0}])
    trainer, result = cli.run_training(cfg, log=lambda *a: None, progress=False)
    assert result["test_acc"] > 0.8
    from safetensors.numpy import load_file
    saved = load_file(str(tmp_path / "r" / "preprocessor.safetensors"))
    import cnnkit as ck
    x = ck.data.load_digits()["train"].x
    means = [np.asarray(v).ravel() for v in saved.values()]
    assert any(np.allclose(m, x.mean(axis=(0, 2, 3)), rtol=1e-5) for m in means)  # fitted on the train split


def test_a_zoo_model_from_a_config(tmp_path):
    cfg = cli.load_config(None, {"out": str(tmp_path / "r"), "epochs": 2})
    cfg["model"] = {"zoo": "resnet20", "in_channels": 1, "num_classes": 10}
    trainer, result = cli.run_training(cfg, log=lambda *a: None, progress=False)
    assert type(trainer.model).__name__ != "Sequential" and "layer1.0.conv1.weight" in dict(trainer.model.named_parameters())
    assert result["test_acc"] > 0.5
