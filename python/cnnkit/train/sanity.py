"""trainer.sanity_check(train): CS231n's checks before a long run ("babysitting the learning process").

1. With regularisation off, the initial loss is close to ln(C) for C classes (softmax at chance). A loss
   far above it usually means the loss is summed instead of averaged, or the initial weights are too big.
2. Turning regularisation up raises the loss.
3. The model can overfit a tiny subset (20 samples) to 100% training accuracy, regularisation off.
4. The gradients pass a sampled numeric gradient check.
Each check runs on copies (model and optimizer), so the trainer's own state is untouched.
"""
import copy
import math

import numpy as np

from ..autograd import as_array
from ..data.loader import DataLoader
from ..regularizers import L2


class SanityReport:
    def __init__(self):
        self.checks = []  # (name, passed, detail)

    def add(self, name, passed, detail):
        self.checks.append((name, bool(passed), detail))

    @property
    def passed(self):
        return all(p for _, p, _ in self.checks)

    def failed(self):
        return [(n, d) for n, p, d in self.checks if not p]

    def __str__(self):
        lines = ["sanity check:"]
        for name, ok, detail in self.checks:
            lines.append(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
        lines.append("  all checks passed" if self.passed else f"  {len(self.failed())} check(s) failed")
        return "\n".join(lines)

    __repr__ = __str__


def _arrays(train, n):
    """The first n samples of `train` as arrays (x, y)."""
    if isinstance(train, DataLoader):
        train = train.dataset
    if isinstance(train, (tuple, list)):
        x, y = train
        return np.ascontiguousarray(x[:n]), np.asarray(y[:n])
    x, y = train[np.arange(min(n, len(train)))]
    return np.ascontiguousarray(x), np.asarray(y)


def run_sanity_check(trainer, train, num_classes=None, batch_size=64, overfit_samples=20, overfit_steps=300):
    report = SanityReport()
    # Every check runs on a CPU copy of the model: they test the model and the loss, not the device, and
    # a few hundred tiny steps would mostly wait on host reads on a GPU.
    cpu_model = copy.deepcopy(trainer.model).to("cpu")
    model = copy.deepcopy(cpu_model)
    model.train()
    x, y = _arrays(train, batch_size)
    C = int(num_classes) if num_classes else int(np.max(y)) + 1

    # 1. initial loss vs ln(C), regularisation off (dropout's randomness does not move the expectation)
    loss0, _ = trainer.loss_fn(as_array(model(x)), y)
    loss0 = float(loss0)
    expect = math.log(C)
    # "About ln(C)": a He-initialised net starts some way above it (2.9 for 10 classes is usual), while a
    # summed loss or far too large weights land many times above; half to one and a half times is the band.
    ok = 0.5 * expect <= loss0 <= 1.5 * expect
    hint = ""
    if not ok:
        hint = (f"; {loss0 / expect:.1f}x ln(C): is the loss summed over the batch instead of averaged?"
                if loss0 > 2.5 * expect and abs(loss0 / len(y) - expect) < 0.5 * expect else
                "; the initial weights may be too large (use He or small-Gaussian initialisation)")
    report.add("initial loss ~ ln(C)", ok, f"loss {loss0:.4f}, ln({C}) = {expect:.4f}{hint}")

    # 2. more regularisation -> more loss
    params = [p for p in model.parameters() if p.requires_grad]
    strength = 1e3 / max(1.0, sum(float(np.sum(p.data.astype(np.float64) ** 2)) for p in params if p.data.ndim > 1))
    reg = L2(strength, decay_bias=False)
    with_reg = loss0 + reg.loss(params)
    report.add("loss rises with regularisation", with_reg > loss0,
               f"data loss {loss0:.4f} -> {with_reg:.4f} with an L2 penalty of strength {strength:.3g}")

    # 3. overfit a tiny subset, regularisation off
    xs, ys = _arrays(train, overfit_samples)
    small = copy.deepcopy(cpu_model)
    small.train()
    opt = trainer.clone_optimizer(small.parameters())
    acc = 0.0
    steps = 0
    for steps in range(1, overfit_steps + 1):
        opt.zero_grad()
        scores = as_array(small(xs))
        _, dscores = trainer.loss_fn(scores, ys)
        small.backward(dscores, need_dx=False)
        opt.step()
        if steps % 10 == 0:
            small.eval()
            acc = float((as_array(small(xs)).argmax(axis=1) == ys).mean())
            small.train()
            if acc == 1.0:
                break
    report.add(f"overfits {len(ys)} samples", acc == 1.0,
               f"train accuracy {acc:.3f} after {steps} steps"
               + ("" if acc == 1.0 else " (raise the learning rate, or check the backward pass)"))

    # 4. sampled gradient check (float64 copy, a few samples, no dropout randomness between evaluations)
    from ..gradcheck import GradcheckError, gradcheck
    try:
        # Parameter gradients only: the input gradient is never needed in training, and raw image data
        # (exact zeros, ties) puts many of its coordinates on kinks.
        rep = gradcheck(cpu_model, x[:4], y[:4], loss=trainer.loss_fn, max_coords=8, check_input=False,
                        raise_on_fail=False)
        worst = max((r["max_rel_err"] for r in rep.rows), default=0.0)
        bad = [f"{r['name']} ({r['failures']} of {r['checked']})" for r in rep.rows if r["failures"]]
        report.add("gradient check", rep.ok, f"{len(rep.rows)} tensors, worst relative error {worst:.2e}"
                   + (f"; failing: {', '.join(bad)}" if bad else ""))
    except GradcheckError as e:
        report.add("gradient check", False, str(e).splitlines()[0])
    return report
