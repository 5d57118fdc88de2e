"""ck.train.TensorBoard: what a run records, written as TensorBoard event files through tensorboardX (the
optional extra ``cnnkit[tensorboard]``), as Keras's TensorBoard callback does for a Keras model.

Every event's step is the iteration (optimizer step) count, so the epoch curves line up with the loss curve,
and a resumed run can purge what a crashed run wrote after its checkpoint (tensorboardX's purge_step).
"""
import os
import re
import time

from .._validate import check_flag as _flag, check_int as _int
from .callbacks import Callback
from .checkpoint import host
from .plots import filter_grid, first_conv_weight

_NOT_SCALARS = ("epoch", "steps", "partial")   # an epoch record's bookkeeping, not a curve
_BAD_TAG_CHARS = re.compile(r"[^-/\w.]")       # what tensorboardX would replace in a tag, with a warning


def _tag(name):
    return _BAD_TAG_CHARS.sub("_", name)


def _summary_writer_class(images):
    """tensorboardX's SummaryWriter; with `images`, Pillow too (tensorboardX encodes images with it)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError('TensorBoard: needs tensorboardX, which is not installed; '
                          'pip install "cnnkit[tensorboard]"') from None
    if images:
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise ImportError('TensorBoard: image_every > 0 needs Pillow (tensorboardX writes images as PNG with '
                              'it), which is not installed; pip install "cnnkit[tensorboard]", or pass '
                              'image_every=0') from None
    return SummaryWriter


def _epoch_end_step(history, epoch, default):
    """The last iteration of epoch `epoch` (1-based, as an epoch record counts), or `default`."""
    it = history.iterations
    for i in range(len(it["epoch"]) - 1, -1, -1):
        if it["epoch"][i] == epoch - 1:
            return it["step"][i]
        if it["epoch"][i] < epoch - 1:
            break
    return default


class TensorBoard(Callback):
    """Log a run for TensorBoard (``tensorboard --logdir <log_dir>``):

    train/loss, train/lr          every iteration (History.iterations)
    epoch/<key>                   each epoch's record at its last iteration: train_loss, train_acc, val_loss,
                                  val_acc, lr, seconds, images_per_s, skipped_steps
    ratio/<layer>                 with ratio=True, the update/weight ratios the Trainer records every
                                  ``ratio_every`` iterations, at the iteration that made the update
    weights/<name>, grads/<name>  histograms of every parameter and of its gradient (from the epoch's last
                                  step) every `histogram_every` epochs (0: never)
    filters                       the first Conv2d's filters as one image every `image_every` epochs (0:
                                  never): each scaled to [0, 1], tiled as CS231n's visualize_grid

    Characters a tag may not hold ("0 Conv2d") become "_". The writer opens at fit start, flushes its events
    to disk at every epoch end and is closed at fit end."""

    def __init__(self, log_dir, histogram_every=1, image_every=1, ratio=True):
        op = "TensorBoard"
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"{op}: log_dir must be a folder path (str or os.PathLike), got {type(log_dir).__name__}")
        self.log_dir = os.fspath(log_dir)
        self.histogram_every = _int(op, "histogram_every", histogram_every, minimum=0)
        self.image_every = _int(op, "image_every", image_every, minimum=0)
        self.ratio = _flag(op, "ratio", ratio)
        self._writer_class = _summary_writer_class(self.image_every > 0)
        self.writer = None
        self._written = {"iterations": 0, "ratios": 0, "epochs": 0}   # of the History, already in the log

    def on_fit_start(self, trainer):
        self.close()
        h = trainer.history
        for k, n in (("iterations", len(h.iterations["step"])), ("ratios", len(h.ratios)), ("epochs", len(h.epochs))):
            self._written[k] = min(self._written[k], n)
        # A resumed run (the trainer has stepped) purges the events from the first one not yet written on: a
        # crashed run may have logged steps past its last checkpoint, which this run logs again.
        purge = None
        if trainer.step:
            firsts = [trainer.step + 1]
            if self._written["iterations"] < len(h.iterations["step"]):
                firsts.append(h.iterations["step"][self._written["iterations"]])
            if self._written["ratios"] < len(h.ratios):
                firsts.append(h.ratios[self._written["ratios"]]["step"] + 1)
            purge = min(firsts)
        # tensorboardX names the file after the second it opens it: a nanosecond suffix keeps two writers of
        # the same second (a fit after a fit) apart, in the order they were opened, which TensorBoard reads in
        self.writer = self._writer_class(logdir=self.log_dir, purge_step=purge, filename_suffix=f".{time.time_ns()}")
        self._write_history(trainer)

    def _write_history(self, trainer):
        """Write what the History has booked since the last call (on a GPU, steps are booked in batches)."""
        w, h, done = self.writer, trainer.history, self._written
        it = h.iterations
        for i in range(done["iterations"], len(it["step"])):
            w.add_scalar("train/loss", it["loss"][i], it["step"][i])
            w.add_scalar("train/lr", it["lr"][i], it["step"][i])
        done["iterations"] = len(it["step"])
        if self.ratio:
            for r in h.ratios[done["ratios"]:]:
                for layer, v in r["ratios"].items():
                    w.add_scalar(f"ratio/{_tag(layer)}", v, r["step"] + 1)   # ratios count steps from 0
        done["ratios"] = len(h.ratios)
        for e in h.epochs[done["epochs"]:]:
            step = _epoch_end_step(h, e["epoch"], trainer.step)
            for k, v in e.items():
                if k not in _NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool):
                    w.add_scalar(f"epoch/{_tag(k)}", v, step)
        done["epochs"] = len(h.epochs)

    def on_step_end(self, trainer, step, loss):
        self._write_history(trainer)

    def on_epoch_end(self, trainer, epoch, logs):
        self._write_history(trainer)
        step, model = trainer.step, trainer.model
        if self.histogram_every and (epoch + 1) % self.histogram_every == 0:
            for n, p in model.named_parameters():
                self.writer.add_histogram(f"weights/{_tag(n)}", host(p.data), step)
                if p.requires_grad and p.grad is not None:
                    self.writer.add_histogram(f"grads/{_tag(n)}", host(p.grad), step)
        if self.image_every and (epoch + 1) % self.image_every == 0:
            w = first_conv_weight(model)
            if w is not None:
                grid = filter_grid(w)
                self.writer.add_image("filters", grid, step, dataformats="HWC" if grid.ndim == 3 else "HW")
        self.writer.flush()    # each finished epoch is on disk even if the run dies before fit's end

    def on_fit_end(self, trainer):
        self._write_history(trainer)   # a partial last epoch
        self.close()

    def close(self):
        """Flush and close the event file (fit's end does it)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def state_dict(self):
        return dict(self._written)

    def load_state_dict(self, s):
        self._written = {k: int(s[k]) for k in ("iterations", "ratios", "epochs")}
