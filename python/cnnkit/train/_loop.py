"""Trainer.fit's loop over epochs and steps, its end-of-epoch work, and how a stopped or interrupted run
logs the epoch it did not finish."""
import sys
import time
import types

from .._xp import is_device_array
from ..schedules import ReduceOnPlateau


class LoopMixin:
    """Trainer methods that run the epochs of fit()."""

    def _epochs(self, loader, val_loader, epochs, checkpoint_dir, checkpoint_every, checkpoint_every_steps, tty,
                log_every, sync_every, steps_per_epoch):
        """fit's loop over the epochs (and within each, the steps)."""
        while self.epoch < epochs and not self.stop_training:
            epoch = self.epoch
            if self._acc is None:
                # loss and correct are summed over the steps with a finite loss (loss_count images), count
                # is every image (throughput); steps and skipped count this epoch's steps
                self._acc = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0, "loss_count": 0, "steps": 0,
                             "skipped": 0}
                self._emit("on_epoch_start", epoch)
            else:   # resumed from a checkpoint written before the finite-loss counts were kept
                self._acc.setdefault("loss_count", self._acc["count"])
                self._acc.setdefault("steps", None)
                self._acc.setdefault("skipped", 0)
            bar = None
            if tty:
                from tqdm import tqdm
                # A terminal that reports no width (0 columns, e.g. some ptys) would make tqdm draw nothing.
                import shutil
                width = shutil.get_terminal_size((100, 24)).columns or 100
                pos = loader.state_dict()
                bar = tqdm(total=steps_per_epoch, initial=pos["batch"] if pos["epoch"] == epoch else 0,
                           desc=f"epoch {epoch + 1}/{epochs}", leave=True, ncols=width)
            t0 = time.perf_counter()
            out = self._out = types.SimpleNamespace(bar=bar, t0=t0, epochs=epochs, log_every=log_every,
                                                    steps_per_epoch=steps_per_epoch)
            batches = () if self._epoch_steps_done else loader
            self._epoch_steps_done = False
            for x, y in batches:
                x, y = self.to_device(x, y)
                loss, correct = self.train_step(x, y)
                self.step += 1
                due = bool(checkpoint_dir and checkpoint_every_steps and self.step % checkpoint_every_steps == 0)
                if is_device_array(loss):
                    self._pending.append((self.step, epoch, loss, correct, len(y) * self._world, self.lr))
                    self._emit("on_step_end", self.step, loss)
                    if len(self._pending) >= sync_every or due:
                        self._flush(out)
                else:
                    self._record(self.step, epoch, loss, correct, len(y) * self._world, self.lr, out)
                    self._emit("on_step_end", self.step, loss)
                if self.history.stop_reason:
                    self.stop_training = True
                    break
                if due:
                    self._acc["seconds"] += time.perf_counter() - t0
                    t0 = out.t0 = time.perf_counter()
                    self.save_checkpoint(checkpoint_dir, loader)
                if self.stop_training:
                    break
            self._flush(out)
            self._sync_skips()   # on a GPU: the optimizer's skip counter, read once an epoch
            if bar is not None:
                bar.close()
            self._out = None
            if self.history.stop_reason:
                self._acc["seconds"] += time.perf_counter() - out.t0
                self._log_partial_epoch(epoch)
                break
            self._acc["seconds"] += time.perf_counter() - t0
            self._end_epoch(epoch, epochs, val_loader, tty)
            if checkpoint_dir and checkpoint_every and (epoch + 1) % checkpoint_every == 0:
                self.save_checkpoint(checkpoint_dir, loader)

    def _interrupted(self):
        """A KeyboardInterrupt inside fit: book what the device still holds, log the epoch in progress as far
        as it got, and say so; fit then ends normally and returns the History."""
        out, self._out = self._out, None
        if out is not None and out.bar is not None:
            out.bar.close()
        self._flush()
        self._sync_skips()
        reason = f"interrupted (KeyboardInterrupt) at iteration {self.step}"
        if not self.history.stop_reason:
            self.history.stop_reason = reason
        self.history.events.append(reason)
        print(f"cnnkit: stopping: {reason}", file=sys.stderr, flush=True)
        self.stop_training = True
        if self._acc is not None:
            if out is not None:
                self._acc["seconds"] += time.perf_counter() - out.t0
            self._log_partial_epoch(self.epoch)

    def _log_partial_epoch(self, epoch):
        """Log the epoch a stopped run did not finish (no validation, no epoch-end callbacks or schedule)."""
        if self._acc and (self._acc.get("steps") or self._acc["count"]):
            logs = self._epoch_logs(epoch)
            logs["partial"] = True
            self.history.log_epoch(**logs)

    def _epoch_logs(self, epoch):
        """The epoch's record from its running sums: means over the steps with a finite loss (NaN when every
        step was skipped), this epoch's skipped steps and, when known, its step count."""
        acc = self._acc
        n = acc["loss_count"]
        logs = {"epoch": epoch + 1, "train_loss": acc["loss"] / n if n else float("nan"),
                "train_acc": acc["correct"] / n if n else float("nan"), "seconds": acc["seconds"],
                "images_per_s": acc["count"] / max(acc["seconds"], 1e-9), "lr": self.lr,
                "skipped_steps": int(acc.get("skipped", 0))}
        if acc.get("steps") is not None:
            logs["steps"] = acc["steps"]
        return logs

    def _end_epoch(self, epoch, epochs, val_loader, tty):
        logs = self._epoch_logs(epoch)
        if self._steps_per_epoch and logs.get("steps", self._steps_per_epoch) < self._steps_per_epoch:
            logs["partial"] = True     # stop_training was set inside the epoch
        if val_loader is not None:
            v = self.evaluate(val_loader)
            logs["val_loss"], logs["val_acc"] = v["loss"], v["acc"]
        self.history.log_epoch(**logs)
        if self.schedule is not None:
            if isinstance(self.schedule, ReduceOnPlateau):
                self.schedule.step(logs.get("val_loss", logs["train_loss"]))
            elif self.schedule_interval == "epoch":
                self.schedule.step()
        if self.progress:
            line = (f"epoch {epoch + 1}/{epochs}: loss {logs['train_loss']:.4f} acc {logs['train_acc']:.4f}")
            if "val_acc" in logs:
                line += f" | val loss {logs['val_loss']:.4f} acc {logs['val_acc']:.4f}"
            line += f" | lr {logs['lr']:.2e} | {logs['images_per_s']:.0f} img/s"
            k = logs["skipped_steps"]
            if k:
                line += f" | skipped {k} non-finite step{'s' if k != 1 else ''}"
            print(line, flush=True)
        self._acc = None
        self.epoch = epoch + 1
        self._emit("on_epoch_end", epoch, logs)
