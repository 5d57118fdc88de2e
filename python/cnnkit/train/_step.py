"""The parts of Trainer.train_step around the optimizer step: per-iteration schedules, the count of skipped
steps, and the per-layer update/weight ratios."""
import math

import numpy as np

from .._xp import array_module
from ..schedules import ReduceOnPlateau


def _layer_of(param_name):
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


class StepMixin:
    """Trainer methods that book what one optimizer step did."""

    def _schedule_step(self):
        if (self.schedule is not None and self.schedule_interval == "step"
                and not isinstance(self.schedule, ReduceOnPlateau)):
            self.schedule.step()

    def _count_skips(self, k):
        """Book k skipped steps: in the History and in the epoch in progress."""
        self.history.skipped_steps += k
        if self._acc is not None:
            self._acc["skipped"] = self._acc.get("skipped", 0) + k

    def _sync_skips(self):
        """Book the steps the optimizer skipped since its counter was last read (on a GPU: one host sync);
        returns how many."""
        n = int(self.optimizer.skipped_steps)
        k = n - self._skip_base if self._skip_base is not None and n > self._skip_base else 0
        self._skip_base = n
        if k:
            self._count_skips(k)
        return k

    def _ratios(self, before):
        """Per layer, ||update|| / ||weights before||: floats, or 0-d device arrays on a GPU (NaN for zero weights)."""
        num, den = {}, {}
        kinds = {path: type(l).__name__ for path, l in self.model.named_layers()}
        for n, p in self.model.named_parameters():
            if n not in before:
                continue
            path = _layer_of(n)
            layer = f"{path} {kinds[path]}" if path in kinds and kinds[path] not in path else path
            xp = array_module(p.data)
            num[layer] = num.get(layer, 0.0) + xp.sum((p.data.astype(np.float64) - before[n]) ** 2)
            den[layer] = den.get(layer, 0.0) + xp.sum(before[n].astype(np.float64) ** 2)
        out = {}
        for k in num:
            xp = array_module(num[k])
            if xp is np:
                out[k] = math.sqrt(num[k]) / math.sqrt(den[k]) if den[k] > 0 else float("nan")
            else:
                out[k] = xp.where(den[k] > 0, xp.sqrt(num[k]) / xp.sqrt(den[k]), xp.nan)
        return out
