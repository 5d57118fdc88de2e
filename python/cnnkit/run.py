"""Building and running a configured experiment: the model, optimizer, schedule, data, preprocessing and
augmentation a config names, and run_training, which trains and writes the run folder."""
import contextlib
import json
import os
import time

import numpy as np

from . import data, distributed, optim, profiler, regularizers, schedules, zoo
from . import layers as _layers
from ._io import atomic_write
from ._runtime import __version__, get_num_threads, set_num_threads
from .config import ConfigError, DIGITS_NET
from .graph import Layer, Sequential
from .init import manual_seed
from .train import EarlyStopping, Trainer

def build_model(cfg):
    spec = cfg.get("model", {})
    if "zoo" in spec:
        if spec["zoo"] not in zoo.MODELS:
            raise ConfigError(f"config: 'model.zoo' names an unknown architecture {spec['zoo']!r}; "
                              f"expected one of {sorted(zoo.MODELS)}")
        builder = zoo.MODELS[spec["zoo"]]
        try:
            model = builder(num_classes=spec.get("num_classes", 10), in_channels=spec.get("in_channels", 1),
                            seed=cfg["seed"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config: 'model.zoo' ({spec['zoo']}): {e}") from None
        model.manual_seed(cfg["seed"])
        return model
    manual_seed(cfg["seed"])  # initial weights of layers built without their own seed
    layers = []
    for i, item in enumerate(spec.get("layers", DIGITS_NET)):
        if not isinstance(item, dict) or "type" not in item:
            raise ConfigError(f"config: 'model.layers[{i}]' must be a table with a 'type', got {item!r}")
        cls = getattr(_layers, item["type"], None)
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise ConfigError(f"config: 'model.layers[{i}].type' is not a cnnkit layer: {item['type']!r}")
        kwargs = {k: v for k, v in item.items() if k not in ("type", "args")}
        try:
            layers.append(cls(*item.get("args", []), **kwargs))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config: 'model.layers[{i}]' ({item['type']}): {e}") from None
    model = Sequential(*layers)
    model.manual_seed(cfg["seed"])
    return model


def build_optimizer(cfg, params):
    o = dict(cfg["optimizer"])
    name = o.pop("name")
    cls = getattr(optim, name, None)
    if cls is None or name.startswith("_"):
        raise ConfigError(f"config: 'optimizer.name' is unknown: {name!r}; expected SGD, AdaGrad, RMSProp, Adam, AdamW")
    if "betas" in o:
        o["betas"] = tuple(o["betas"])
    try:
        return cls(params, **o)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config: 'optimizer' ({name}): {e}") from None


def build_schedule(cfg, optimizer, steps_per_epoch):
    s = dict(cfg.get("schedule") or {})
    if not s or s.get("name") in (None, "none", "Constant"):
        return None, "epoch"
    name = s.pop("name")
    interval = s.pop("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise ConfigError(f"config: 'schedule.interval' must be 'epoch' or 'step', got {interval!r}")
    warmup = s.pop("warmup", 0)
    cls = getattr(schedules, name, None)
    if cls is None:
        raise ConfigError(f"config: 'schedule.name' is unknown: {name!r}")
    if name == "Cosine" and "T_max" not in s:
        s["T_max"] = cfg["epochs"] if interval == "epoch" else cfg["epochs"] * steps_per_epoch
    try:
        if warmup:   # the wrapped schedule is built unbound; the warm-up wrapper drives the optimizer
            sched = schedules.LinearWarmup(optimizer, cls(None, **s), warmup)
        else:
            sched = cls(optimizer, **s)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config: 'schedule' ({name}): {e}") from None
    return sched, interval


# data.dataset -> the cnnkit.data loader that reads it from data.path (digits is bundled and takes no path)
DATASETS = {"digits": "load_digits", "mnist": "load_mnist", "fashion_mnist": "load_fashion_mnist",
            "cifar10": "load_cifar10", "cifar100": "load_cifar100"}


def load_dataset(cfg):
    """(train, val, test) ArrayDatasets for data.dataset. Digits has its own split; for the others the first
    10% of the training split is held out for validation."""
    d = cfg["data"]
    name = d.get("dataset", "digits")
    if name not in DATASETS:
        raise ConfigError(f"config: 'data.dataset' is unknown: {name!r}; expected one of {', '.join(DATASETS)}")
    if "label_mode" in d and name != "cifar100":
        raise ConfigError(f"config: 'data.label_mode' applies only to dataset 'cifar100', not {name!r}")
    if name == "digits":
        splits = data.load_digits()
        return splits["train"], splits["val"], splits["test"]
    if "path" not in d:
        raise ConfigError(f"config: 'data.path' is required for dataset {name!r} (nothing is downloaded)")
    kwargs = {"label_mode": d["label_mode"]} if "label_mode" in d else {}
    try:
        splits = getattr(data, DATASETS[name])(d["path"], **kwargs)
    except (OSError, ValueError) as e:  # a missing folder or file, a corrupt file (DataFormatError), label_mode
        raise ConfigError(f"config: 'data' ({name} at 'data.path' {d['path']!r}): {e}") from None
    train = splits["train"]
    n_val = max(1, len(train) // 10)
    return (data.ArrayDataset(train.x[n_val:], train.y[n_val:], train.classes),
            data.ArrayDataset(train.x[:n_val], train.y[:n_val], train.classes), splits["test"])


_NORMALIZERS = {"none": None, "mean_image": "MeanImage", "channel_mean": "ChannelMean",
                "channel_std": "ChannelStandardize", "pca": "PCAWhiten", "zca": "ZCAWhiten"}


def preprocess(cfg, train, val, test, out):
    """Fit data.normalize on the training split, apply it to all three, and save it into the run folder
    (preprocessor.safetensors) so that prediction later uses the same transform."""
    name = cfg["data"].get("normalize", "none")
    if name not in _NORMALIZERS:
        raise ConfigError(f"config: 'data.normalize' is unknown: {name!r}; expected one of {sorted(_NORMALIZERS)}")
    if _NORMALIZERS[name] is None:
        return train, val, test, None
    pre = getattr(data, _NORMALIZERS[name])().fit(train.x)
    sets = [data.ArrayDataset(np.ascontiguousarray(pre(d.x), dtype=np.float32), d.y, d.classes)
            for d in (train, val, test)]
    from safetensors.numpy import save as st_save
    state = pre.state_dict()
    if out is None:     # a rank other than 0 of a distributed run: rank 0 writes the run folder
        return (*sets, pre)
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, "preprocessor.safetensors"),
                 st_save({k: np.ascontiguousarray(v) for k, v in state["arrays"].items()},
                         metadata={"kind": state["kind"], "params": json.dumps(state["params"])}))
    return (*sets, pre)


def build_augmentation(cfg):
    """data.augment = [{type = "RandomCrop", args = [8], padding = 1}, ...] -> a data.Compose, or None."""
    items = cfg["data"].get("augment") or []
    stages = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "type" not in item:
            raise ConfigError(f"config: 'data.augment[{i}]' must be a table with a 'type', got {item!r}")
        cls = getattr(data, item["type"], None)
        if not (isinstance(cls, type) and issubclass(cls, data.Transform)):
            raise ConfigError(f"config: 'data.augment[{i}].type' is not a cnnkit augmentation: {item['type']!r}")
        try:
            stages.append(cls(*item.get("args", []), **{k: v for k, v in item.items() if k not in ("type", "args")}))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config: 'data.augment[{i}]' ({item['type']}): {e}") from None
    return data.Compose(stages) if stages else None


def _best_entry(best):
    """result.json's "best": which epoch best.safetensors holds, by which metric (None: no epoch ended)."""
    if best is None or best.best_epoch is None:
        return None
    return {"file": os.path.basename(best.best_path), "epoch": best.best_epoch, "monitor": best.monitor,
            "value": best.best}


def write_profile(prof, out):
    """The profile of a run into its folder: profile.txt (every row, by self time) and trace.json (Chrome's
    Trace Event Format). Returns the two paths."""
    table, trace = os.path.join(out, "profile.txt"), os.path.join(out, "trace.json")
    atomic_write(table, (prof.table(sort_by="self_time", row_limit=None) + "\n").encode())
    prof.export_chrome_trace(trace)
    return table, trace


def run_training(cfg, log=print, progress=True, quit_factor=None, profile=False):
    """Train as `cfg` says; returns (trainer, result dict). Writes the run folder cfg['out']. quit_factor: the
    Trainer's quit-early rule (None: off, as the Trainer's default; ck.search's trials pass 3). With
    ``profile=True`` the training (fit) runs under ck.profiler.profile() and write_profile adds its files (rank 0's
    only). Under a launcher with more than one rank (mpiexec -n N) the training is data-parallel and rank 0 alone
    logs and writes."""
    parallel = distributed.launched_world_size() > 1
    if cfg.get("threads"):
        set_num_threads(cfg["threads"])
    elif parallel and "OMP_NUM_THREADS" not in os.environ:   # the ranks on one machine share its cores
        set_num_threads(max(1, (os.cpu_count() or 1) // distributed.launched_local_size()))
    if parallel and not distributed.is_initialized():
        distributed.init()
    main = distributed.is_main()
    if not main:
        log, progress = (lambda *a, **k: None), False
    out = cfg["out"] or os.path.join("runs", time.strftime("train-%Y%m%d-%H%M%S"))
    train, val, test = load_dataset(cfg)
    train, val, test, _ = preprocess(cfg, train, val, test, out if main else None)
    augment = build_augmentation(cfg)
    model = build_model(cfg)
    if cfg.get("device", "cpu") != "cpu":
        try:
            model.to(cfg["device"])
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"device: {e}") from None
    opt = build_optimizer(cfg, model.parameters())
    steps = -(-len(train) // cfg["batch_size"])
    sched, interval = build_schedule(cfg, opt, steps)
    regs = []
    r = cfg.get("regularizers") or {}
    if r.get("l2") or r.get("l1"):
        regs.append(regularizers.ElasticNet(l1=r.get("l1", 0.0), l2=r.get("l2", 0.0), decay_bias=False))
    callbacks = []
    if cfg.get("early_stopping"):
        es = cfg["early_stopping"]
        callbacks.append(EarlyStopping(monitor=es.get("monitor", "val_acc"), patience=es.get("patience", 5)))
    trainer = Trainer(model, opt, "softmax_cross_entropy", schedule=sched, regularizers=regs,
                      callbacks=callbacks, schedule_interval=interval, progress=progress, quit_factor=quit_factor,
                      distributed=parallel)
    input_shape = tuple(train[np.arange(1)][0].shape[1:])
    where = f"{get_num_threads()} threads" if model.device == "cpu" else model.device
    if parallel:
        where += f" x {distributed.world_size()} ranks"
    log(f"cnnkit {__version__}: {len(train)} train / {len(val)} val / {len(test)} test images of {input_shape}, "
        f"{where}, run folder {out}")
    try:
        model.summary(input_shape, print_fn=log)
    except Exception:  # a summary is a nicety; training must not depend on it
        pass
    t0 = time.perf_counter()
    if augment is not None:
        train = data.DataLoader(train, cfg["batch_size"], shuffle=True, seed=cfg["seed"], transform=augment)
    with profiler.profile() if profile else contextlib.nullcontext() as prof:
        trainer.fit(train, val, epochs=cfg["epochs"], batch_size=cfg["batch_size"], seed=cfg["seed"],
                    checkpoint_dir=os.path.join(out, "checkpoints"), checkpoint_every=cfg["checkpoint_every"],
                    run_dir=out, plots=cfg["plots"])
    seconds = time.perf_counter() - t0
    if profile and main:
        table, trace = write_profile(prof, out)
        log(f"profile: {table} (time per layer, kernel and step), {trace} (open in ui.perfetto.dev)")
    test_metrics = trainer.evaluate(test)
    result = {"test_acc": test_metrics["acc"], "test_loss": test_metrics["loss"], "seconds": seconds,
              "epochs_run": len(trainer.history.epochs), "stop_reason": trainer.history.stop_reason,
              "best": _best_entry(trainer.best_checkpoint), "config": cfg, "world_size": distributed.world_size()}
    if main:
        model.save(os.path.join(out, "model.safetensors"))
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(result, f, indent=1, default=str)
    log(f"test accuracy {test_metrics['acc']:.4f} (loss {test_metrics['loss']:.4f}) after {seconds:.1f} s; "
        f"run folder {out}")
    return trainer, result
