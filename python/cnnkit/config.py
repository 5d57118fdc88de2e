"""Run configs: the schema of keys a config may hold, the defaults, and reading a TOML file into a checked
config dict (ConfigError names the key that is wrong)."""
try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

# Every key a config may hold, with its type; anything else is an error that names the key.
SCHEMA = {
    "seed": int, "epochs": int, "batch_size": int, "threads": int, "out": str, "plots": bool, "device": str,
    "checkpoint_every": int,
    "data": {"dataset": str, "path": str, "label_mode": str, "normalize": str, "augment": list},
    "model": {"layers": list, "zoo": str, "num_classes": int, "in_channels": int},
    "optimizer": {"name": str, "lr": float, "momentum": float, "nesterov": bool, "weight_decay": float,
                  "betas": list, "eps": float, "alpha": float, "centered": bool, "dampening": float,
                  "amsgrad": bool, "lr_decay": float, "decay_bias": bool, "l1": float, "max_norm": float,
                  "nonfinite": str, "clip_grad_norm": float},
    "schedule": {"name": str, "interval": str, "step_size": int, "gamma": float, "milestones": list,
                 "T_max": int, "eta_min": float, "T_0": int, "T_mult": int, "base_lr": float, "max_lr": float,
                 "step_size_up": int, "mode": str, "warmup": int, "total_steps": int, "power": float,
                 "T": int, "patience": int, "factor": float},
    "regularizers": {"l2": float, "l1": float},
    "early_stopping": {"monitor": str, "patience": int},
}

DEFAULTS = {"seed": 0, "epochs": 15, "batch_size": 32, "out": None, "plots": True, "checkpoint_every": 1,
            "device": "cpu",
            "data": {"dataset": "digits", "normalize": "none", "augment": []},
            "optimizer": {"name": "Adam", "lr": 2e-3},
            "schedule": {"name": "Cosine"}}

DIGITS_NET = [
    {"type": "Conv2d", "args": [1, 16, 3], "padding": 1}, {"type": "ReLU"},
    {"type": "Conv2d", "args": [16, 32, 3], "padding": 1}, {"type": "ReLU"},
    {"type": "MaxPool2d", "args": [2]}, {"type": "Flatten"},
    {"type": "Linear", "args": [512, 64]}, {"type": "ReLU"}, {"type": "Dropout", "args": [0.25]},
    {"type": "Linear", "args": [64, 10]},
]


class ConfigError(ValueError):
    pass


def _check(cfg, schema, where=""):
    for key, value in cfg.items():
        name = f"{where}{key}"
        if key not in schema:
            raise ConfigError(f"config: unknown key '{name}'; expected one of {sorted(schema)}")
        want = schema[key]
        if isinstance(want, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config: '{name}' must be a table, got {type(value).__name__}")
            _check(value, want, name + ".")
        elif want is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"config: '{name}' must be a number, got {value!r}")
        elif want is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"config: '{name}' must be an integer, got {value!r}")
        elif not isinstance(value, want):
            raise ConfigError(f"config: '{name}' must be a {want.__name__}, got {value!r}")


def read_toml(path):
    """The TOML file at path as a dict; ConfigError (exit status 2 from the CLI) if it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path} is not valid TOML: {e}") from None


def load_config(path=None, overrides=None):
    """Read and validate a TOML config, filling defaults. Raises ConfigError naming the bad key."""
    cfg = {} if path is None else read_toml(path)
    _check(cfg, SCHEMA)
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for k, v in cfg.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            if k in ("optimizer", "schedule") and "name" in v and v["name"] != merged[k].get("name"):
                merged[k] = {}
            merged[k].update(v)
        else:
            merged[k] = v
    for k, v in (overrides or {}).items():
        if v is not None:
            merged[k] = v
    for k in ("epochs", "batch_size"):
        if merged[k] < 1:
            raise ConfigError(f"config: '{k}' must be >= 1, got {merged[k]}")
    return merged
