"""What a run records: per iteration (loss, learning rate), per epoch (train and validation loss and
accuracy, time, throughput), and at intervals the update/weight ratio of each layer (CS231n: about 1e-3 is
healthy; much larger and the learning rate is too high, much smaller and it is too low). Exports to JSON
and CSV, and draws the babysitting plots (``plot``)."""
import csv
import json
import os

from .._io import atomic_write


class History:
    def __init__(self):
        self.iterations = {"step": [], "epoch": [], "loss": [], "lr": []}
        self.epochs = []          # dicts: epoch, train_loss, train_acc, val_loss, val_acc, seconds, images_per_s
        self.ratios = []          # dicts: step, ratios {layer: update/weight}
        self.events = []          # strings: early stop, quit-early, skipped steps...
        self.stop_reason = None
        self.skipped_steps = 0    # steps not trained on: a non-finite loss or gradient (nonfinite="skip")

    # ------------------------------------------------------------ recording
    def log_iteration(self, step, epoch, loss, lr):
        it = self.iterations
        it["step"].append(int(step))
        it["epoch"].append(int(epoch))
        it["loss"].append(float(loss))
        it["lr"].append(float(lr))

    def log_epoch(self, **values):
        self.epochs.append({k: (float(v) if isinstance(v, float) else v) for k, v in values.items()})

    def log_ratios(self, step, ratios):
        self.ratios.append({"step": int(step), "ratios": {k: float(v) for k, v in ratios.items()}})

    def metric(self, name):
        """Per-epoch values of `name` (e.g. "val_acc"), None where it was not measured."""
        return [e.get(name) for e in self.epochs]

    @property
    def history(self):
        """Keras's ``History.history``: metric name -> its per-epoch values (train_loss, train_acc, val_loss,
        val_acc, lr, seconds, ...; cnnkit's names, not Keras's "loss"/"accuracy")."""
        names = []
        for e in self.epochs:
            names += [k for k in e if k not in names]
        return {k: self.metric(k) for k in names}

    def __getitem__(self, name):
        """history["val_acc"]: the per-epoch values of a logged metric (KeyError naming the logged ones)."""
        logged = self.history
        if name not in logged:
            raise KeyError(f"History: no metric {name!r}; logged: {sorted(logged)}")
        return logged[name]

    # ------------------------------------------------------------ export
    def state_dict(self):
        return {"iterations": self.iterations, "epochs": self.epochs, "ratios": self.ratios,
                "events": self.events, "stop_reason": self.stop_reason, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, sd):
        self.iterations = {k: list(v) for k, v in sd["iterations"].items()}
        self.epochs = [dict(e) for e in sd["epochs"]]
        self.ratios = [dict(r) for r in sd["ratios"]]
        self.events = list(sd.get("events", []))
        self.stop_reason = sd.get("stop_reason")
        self.skipped_steps = int(sd.get("skipped_steps", 0))
        return self

    @classmethod
    def from_json(cls, path):
        with open(path) as f:
            return cls().load_state_dict(json.load(f))

    def to_json(self, path):
        atomic_write(path, json.dumps(self.state_dict(), indent=1).encode())

    def to_csv(self, folder):
        """Writes iterations.csv, epochs.csv and ratios.csv into `folder`; returns their paths."""
        os.makedirs(folder, exist_ok=True)
        paths = []
        it = self.iterations
        p = os.path.join(folder, "iterations.csv")
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "epoch", "loss", "lr"])
            w.writerows(zip(it["step"], it["epoch"], it["loss"], it["lr"]))
        paths.append(p)
        p = os.path.join(folder, "epochs.csv")
        keys = sorted({k for e in self.epochs for k in e}, key=lambda k: (k != "epoch", k))
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.epochs)
        paths.append(p)
        p = os.path.join(folder, "ratios.csv")
        layers = sorted({k for r in self.ratios for k in r["ratios"]})
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step"] + layers)
            for r in self.ratios:
                w.writerow([r["step"]] + [r["ratios"].get(k, "") for k in layers])
        paths.append(p)
        return paths

    def plot(self, folder, model=None):
        """Write the babysitting plots as PNG files into `folder` (see cnnkit.train.plots)."""
        from .plots import plot_history
        return plot_history(self, folder, model=model)

    def __repr__(self):
        last = self.epochs[-1] if self.epochs else {}
        skipped = f", {self.skipped_steps} skipped" if self.skipped_steps else ""
        return f"History({len(self.iterations['step'])} iterations{skipped}, {len(self.epochs)} epochs, last={last})"
