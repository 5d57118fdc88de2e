"""LR range test ("LR finder", Smith 2017, sec. 3.3): a short run that raises the learning rate exponentially
from start_lr to end_lr, records the loss of every step, and stops when the loss passes stop_factor (3) times
the first loss, CS231n's quit rule. The model's parameters (and a passed optimizer's state) are restored
afterwards, so the test leaves no trace.

It uses the public model API of DESIGN.md: ``model(x)``, ``model.backward(dscores)``, ``model.parameters()``,
``model.zero_grad()``, and a loss ``loss_fn(scores, y) -> (loss, dscores)``.
"""
import itertools
import math

import numpy as np

from ._xp import array_module, is_device_array

__all__ = ["lr_find", "LRFinderResult"]


class LRFinderResult:
    """lrs and losses (raw, and smoothed by a bias-corrected moving average), why it stopped, and suggestion:
    the lr where the smoothed loss falls fastest per unit of log(lr) (Smith's rule of thumb), before the
    minimum. ``min_loss_lr / 10`` is the other common pick; both are given."""

    def __init__(self, lrs, losses, smoothed, stopped_because):
        self.lrs, self.losses, self.smoothed, self.stopped_because = lrs, losses, smoothed, stopped_because
        self.min_loss_lr = lrs[int(np.argmin(smoothed))] if lrs else None
        self.suggestion = self._steepest()

    def _steepest(self):
        if len(self.lrs) < 3:
            return self.min_loss_lr
        k = int(np.argmin(self.smoothed))
        s = np.asarray(self.smoothed[:k + 1])
        if len(s) < 2:
            return self.lrs[0]
        slope = np.gradient(s, np.log(self.lrs[:k + 1]))
        return self.lrs[int(np.argmin(slope))]

    def __repr__(self):
        return (f"LRFinderResult({len(self.lrs)} steps, suggestion={self.suggestion:.3g}, "
                f"min_loss_lr={self.min_loss_lr:.3g}, stopped: {self.stopped_because})")


def lr_find(model, loss_fn, batches, optimizer=None, start_lr=1e-7, end_lr=10.0, num_steps=100, stop_factor=3.0,
            smoothing=0.9):
    """Run the LR range test; returns an LRFinderResult.

    batches: an iterable of (x, y); a list or tuple is cycled if shorter than num_steps. optimizer: a cnnkit
    optimizer over model.parameters() (its lr is overwritten each step; its state is restored after);
    default SGD(momentum=0.9). The stop rule compares each raw loss with the first loss; a non-finite loss
    stops too.
    """
    from . import optim  # late: optim imports the compiled module

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
    it = itertools.cycle(batches) if isinstance(batches, (list, tuple)) else iter(batches)
    ratio = (end_lr / start_lr) ** (1.0 / (num_steps - 1))
    lrs, losses, smoothed = [], [], []
    avg, first, why = 0.0, None, "reached end_lr"
    try:
        for k in range(int(num_steps)):
            try:
                x, y = next(it)
            except StopIteration:
                why = "ran out of batches"
                break
            lr = start_lr * ratio ** k
            for g in optimizer.param_groups:
                g["lr"] = lr
            model.zero_grad()
            if xp is not np and not is_device_array(x):
                x = xp.asarray(x)   # the model is on a GPU: the batch goes there (and each loss comes back)
            scores = model(x)
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
    return LRFinderResult(lrs, losses, smoothed, why)
