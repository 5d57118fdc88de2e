"""LR range test ("LR finder", Smith 2017, sec. 3.3): a short run that raises the learning rate exponentially
from start_lr to end_lr, records the loss of every step, and stops when the loss passes stop_factor (3) times
the first loss, CS231n's quit rule. The model's parameters (and a passed optimizer's state) are restored
afterwards, and a DataLoader's position too, so the test leaves no trace. ``result.plot(path)`` draws the loss
against log(lr) with the suggestion marked, as fast.ai's and Keras's finders do.

It uses only the public model API: ``model(x)``, ``model.backward(dscores)``, ``model.parameters()``,
``model.zero_grad()``, and a loss ``loss_fn(scores, y) -> (loss, dscores)``.
"""
import math

import numpy as np

from ._xp import array_module, is_device_array
from .autograd import as_array

__all__ = ["lr_find", "LRFinderResult"]

MIN_POINTS = 10   # recorded steps a suggestion needs (the smoothed curve is meaningless on fewer)


class LRFinderResult:
    """lrs and losses (raw, and smoothed by a bias-corrected moving average), why it stopped, and suggestion:
    the lr where the smoothed loss falls fastest per unit of log(lr) (Smith's rule of thumb), after the first
    tenth of the sweep and before the minimum. ``min_loss_lr / 10`` is the other common pick; both are given.

    suggestion is None, and ``reason`` says why, when the sweep cannot support one: the batches ran out
    before num_steps, fewer than MIN_POINTS steps were recorded (the loss diverged at once, or num_steps is
    that small), or the smoothed loss never fell. ``reason`` is None when there is a suggestion."""

    def __init__(self, lrs, losses, smoothed, stopped_because, ran_out=False):
        self.lrs, self.losses, self.smoothed, self.stopped_because = lrs, losses, smoothed, stopped_because
        self.min_loss_lr = lrs[int(np.argmin(smoothed))] if lrs else None
        self.suggestion, self.reason = self._steepest(ran_out)

    def _steepest(self, ran_out):
        n = len(self.lrs)
        if ran_out:
            return None, (f"the sweep is incomplete: {self.stopped_because}; pass a list, a DataLoader or another "
                          f"re-iterable (they are cycled) or lower num_steps")
        if n < MIN_POINTS:
            if self.stopped_because != "reached end_lr":
                return None, (f"the loss diverged after {n} points ({self.stopped_because}), fewer than the "
                              f"{MIN_POINTS} a suggestion needs: lower start_lr")
            return None, f"only {n} points, fewer than the {MIN_POINTS} a suggestion needs: raise num_steps"
        # The first tenth of the sweep is left out of the search (as fast.ai's skip_start): the moving average
        # is still settling there, and its noise would pass for the steepest fall.
        skip = max(1, n // 10)
        k = int(np.argmin(self.smoothed))
        if k <= skip:
            return None, ("the smoothed loss never fell (its minimum is at the start of the sweep): the range is "
                          "too high, lower start_lr")
        s = np.asarray(self.smoothed[:k + 1])
        slope = np.gradient(s, np.log(self.lrs[:k + 1]))
        return self.lrs[skip + int(np.argmin(slope[skip:]))], None

    def plot(self, path=None):
        """The loss (raw and smoothed) against the learning rate on a log axis, the suggestion marked. Returns
        the matplotlib Figure; writes it as a PNG to `path` when given."""
        from .train.plots import plot_lr_find
        return plot_lr_find(self, path)

    def __repr__(self):
        def g(v):
            return "None" if v is None else f"{v:.3g}"
        why = "" if self.reason is None else f", no suggestion: {self.reason}"
        return (f"LRFinderResult({len(self.lrs)} steps, suggestion={g(self.suggestion)}, "
                f"min_loss_lr={g(self.min_loss_lr)}, stopped: {self.stopped_because}{why})")


def lr_find(model, loss_fn, batches, optimizer=None, start_lr=1e-7, end_lr=10.0, num_steps=100, stop_factor=3.0,
            smoothing=0.9):
    """Run the LR range test; returns an LRFinderResult.

    loss_fn: a callable ``loss(scores, y) -> (loss, dscores)`` or a name, as the Trainer takes it
    ("softmax_cross_entropy", "svm", "mse"...). batches: an iterable of (x, y): a list, a DataLoader or any
    re-iterable is cycled (iterated again when it runs out) until num_steps are done, and a DataLoader is put
    back where it was afterwards; a one-shot iterator (a generator) that runs out ends the sweep, without a
    suggestion. optimizer: a cnnkit optimizer over model.parameters() (its lr is overwritten each step; its
    state is restored after); default SGD(momentum=0.9). The stop rule compares each raw loss with the first
    loss; a non-finite loss stops too.
    """
    from . import optim  # late: optim imports the compiled module
    from .train.trainer import resolve_loss

    loss_fn = resolve_loss("lr_find", loss_fn)

    if not (0 < start_lr < end_lr):
        raise ValueError(f"lr_find: need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if int(num_steps) < 2:
        raise ValueError(f"lr_find: num_steps must be >= 2, got {num_steps}")
    if not stop_factor > 1:
        raise ValueError(f"lr_find: stop_factor must be > 1, got {stop_factor}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"lr_find: smoothing must be in [0, 1), got {smoothing}")
    params = list(model.parameters())
    xp = array_module(*[p.data for p in params[:1]])
    # A default optimizer moves the parameters into its own flat buffer; the original views (and so any
    # optimizer the caller already built over them) are put back afterwards, with the original values.
    bound = [(p.data, p.grad) for p in params]
    if optimizer is None:
        optimizer = optim.SGD(params, lr=start_lr, momentum=0.9)
    saved_params = [p.data.copy() for p in params]
    saved_opt = optimizer.state_dict()
    saved_loader = batches.state_dict() if hasattr(batches, "state_dict") and hasattr(batches, "load_state_dict") \
        else None
    it = iter(batches)
    reiterable = it is not batches
    ratio = (end_lr / start_lr) ** (1.0 / (num_steps - 1))
    lrs, losses, smoothed = [], [], []
    avg, first, why, ran_out = 0.0, None, "reached end_lr", False
    try:
        for k in range(int(num_steps)):
            try:
                x, y = next(it)
            except StopIteration:
                x = None
                if reiterable and k > 0:   # start the batches again (an empty one would loop forever)
                    it = iter(batches)
                    x, y = next(it, (None, None))
                if x is None:
                    why, ran_out = f"ran out of batches after {k} of {int(num_steps)} steps", True
                    break
            lr = start_lr * ratio ** k
            for g in optimizer.param_groups:
                g["lr"] = lr
            model.zero_grad()
            if xp is not np and not is_device_array(x):
                x = xp.asarray(x)   # the model is on a GPU: the batch goes there (and each loss comes back)
            scores = as_array(model(x))
            loss, dscores = loss_fn(scores, y)
            loss = float(loss)
            if not math.isfinite(loss):
                why = "loss is not finite"
                break
            model.backward(dscores)
            optimizer.step()
            avg = smoothing * avg + (1 - smoothing) * loss
            lrs.append(lr)
            losses.append(loss)
            smoothed.append(avg / (1 - smoothing ** (k + 1)))
            if first is None:
                first = loss
            elif loss > stop_factor * first:
                why = f"loss {loss:.4g} > {stop_factor:g} x initial {first:.4g}"
                break
    finally:
        for p, (data, grad), a in zip(params, bound, saved_params):
            p.data, p.grad = data, grad
            p.data[...] = a
        optimizer.load_state_dict(saved_opt)
        if saved_loader is not None:
            batches.load_state_dict(saved_loader)
    return LRFinderResult(lrs, losses, smoothed, why, ran_out=ran_out)
