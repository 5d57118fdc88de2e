"""Booking the steps of a run: epoch sums, History, the progress bar or lines, the quit-early rule, and the
read-back of what a GPU run keeps on the device."""
import math
import sys
import time

from .._xp import array_module


class ProgressMixin:
    """Trainer methods that record each step and decide whether the run must stop."""

    def _record(self, step, epoch, loss, correct, count, lr, out=None):
        """Book one step (loss a float): epoch sums, history, progress, and the quit-early rule."""
        acc = self._acc
        finite = math.isfinite(loss)
        if not finite and self.optimizer.nonfinite == "raise":   # a GPU loss, read back only now
            raise FloatingPointError(
                f"Trainer: the loss is {loss} at iteration {step} (nonfinite='raise'); look for Inf or NaN in the "
                f"data or lower the learning rate (nonfinite='skip' skips such steps)")
        if finite:       # a skipped step's loss is left out of the epoch's means
            acc["loss"] += loss * count
            acc["correct"] += correct
            acc["loss_count"] += count
        acc["count"] += count
        if acc["steps"] is not None:
            acc["steps"] += 1
        self.history.log_iteration(step, epoch, loss, lr)
        if out is not None:
            elapsed = acc["seconds"] + time.perf_counter() - out.t0
            skipped = acc.get("skipped", 0)
            if out.bar is not None:
                out.bar.update(1)
                extra = {"skipped": skipped} if skipped else {}
                out.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc['correct'] / max(acc['loss_count'], 1):.3f}",
                                    lr=f"{lr:.2e}", img_s=f"{acc['count'] / max(elapsed, 1e-9):.0f}", **extra)
            elif self.progress and step % out.log_every == 0 and out.log_every < out.steps_per_epoch:
                print(f"epoch {epoch + 1}/{out.epochs} step {step}: loss {loss:.4f} lr {lr:.2e}"
                      + (f" skipped {skipped}" if skipped else ""), flush=True)
        if not self.history.stop_reason:
            reason = self._quit_reason(loss, step)
            if reason:
                self.history.stop_reason = reason
                self.history.events.append(reason)
                print(f"cnnkit: stopping: {reason}", file=sys.stderr, flush=True)

    def _flush(self, out=None):
        """Read back the losses, counts and ratios a GPU run has kept on the device, in one transfer, and book
        them in step order. Nothing to do on the CPU."""
        pending, ratios = self._pending, self._pending_ratios
        if not pending and not ratios:
            return
        self._pending, self._pending_ratios = [], []
        scalars = [v for _, _, loss, correct, _, _ in pending for v in (loss, correct)]
        scalars += [v for _, r in ratios for v in r.values()]
        xp = array_module(*scalars)
        host = xp.stack([xp.asarray(v, dtype=xp.float64).reshape(()) for v in scalars]).get().tolist()
        # Which steps the optimizer skipped is not read back (its device counter is, once an epoch): here a
        # step counts as skipped for the quit-early rule when its loss is not finite.
        for i, (step, epoch, _, _, count, lr) in enumerate(pending):
            self._step_skipped = not math.isfinite(host[2 * i])
            self._record(step, epoch, host[2 * i], int(host[2 * i + 1]), count, lr, out)
        self._step_skipped = False
        if out is None and pending:
            self._sync_skips()   # before a checkpoint: the epoch's skip count complete in it
        k = 2 * len(pending)
        for step, r in ratios:
            self.history.log_ratios(step, dict(zip(r, host[k:k + len(r)])))
            k += len(r)

    def _initial_loss(self):
        """The first finite loss of the run (a skipped first step has none), or None."""
        return next((v for v in self.history.iterations["loss"] if math.isfinite(v)), None)

    def _quit_reason(self, loss, step=None):
        """CS231n's quit-early rule, when quit_factor is set: the loss passed quit_factor times its first finite
        value, or a whole epoch's worth of steps in a row was skipped for a non-finite loss or gradient (the
        weights no longer change)."""
        step = self.step if step is None else step
        qf = self.quit_factor
        if qf is None:
            return None
        if self._step_skipped:
            self._skip_run += 1
            n = self._skip_run
            if self._steps_per_epoch and n >= self._steps_per_epoch:
                return (f"quit_factor={qf:g}: {n} steps in a row were skipped for a non-finite loss or gradient "
                        f"(iterations {step - n + 1} to {step}, an epoch's worth; the weights no longer change) "
                        f"(CS231n's quit-early rule; quit_factor=None disables it): lower the learning rate or "
                        f"look for Inf or NaN in the data")
            return None
        self._skip_run = 0
        if not math.isfinite(loss):
            return None
        first = self._initial_loss()
        if first is not None and first > 0 and loss > qf * first:
            return (f"quit_factor={qf:g}: the loss {loss:.4g} at iteration {step} passed {qf:g} x the initial "
                    f"loss {first:.4g} = {qf * first:.4g} (CS231n's quit-early rule; quit_factor=None disables "
                    f"it): the learning rate is probably too high")
        return None
