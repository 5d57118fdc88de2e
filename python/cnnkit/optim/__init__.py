"""Optimizers: torch.optim's update rules, defaults and arithmetic order, each step one fused kernel pass.

Every param group is moved into one contiguous ``FlatBuffer`` (``p.data`` / ``p.grad`` become views), so a
step is: one read-only pass over all flat gradients (finite check + global norm), then one fused kernel pass
per group over flat param/grad/state (csrc/ops/optim.cpp, or optim.cu for CuPy parameters). Per-step scalars
(bias corrections, decayed lr, clip coefficient) come from one set of formulas (csrc/ops/optim.h), computed
here on the host for the CPU exactly as torch/optim/*.py computes them. ``LBFGS`` is numpy or CuPy, ported from
torch.optim.LBFGS (Nocedal & Wright, Algorithms 7.4 and 3.5/3.6 for the strong-Wolfe line search).

On a GPU (after ``model.to("cuda")``, before or after the optimizer is built: the state follows the
parameters at the next step) nothing is read back to the host inside ``step()`` with nonfinite="skip": the
finite flag, the norm, the clip coefficient and the step counters live in a device control block that the
kernels read (torch's fused/capturable optimizers do the same with found_inf and device step tensors).
``skipped_steps`` and ``last_grad_norm`` read it lazily (one host sync per read); nonfinite="raise" reads the
finite flag once per step; ``state_dict()`` reads the counters once and returns arrays on the parameters'
device, as torch does; ``load_state_dict`` takes numpy or CuPy arrays and copies them to that device.

``maximize=True`` ascends, as torch's. Beyond torch: ``nonfinite="skip"|"raise"`` (a non-finite gradient is
found before anything changes; a skipped step leaves params and state bit-identical and counts in
``skipped_steps``), ``l1`` (L1 / elastic net gradient added in the same pass), ``max_norm`` (max-norm
constraint after the step), ``clip_grad_norm`` and ``clip_grad_value`` folded into the step, and
``decay_bias``.

``decay_bias`` defaults to True: weight decay, L1 and max-norm reach every parameter, as in torch.optim, so a
model trained here and in PyTorch with the same hyperparameters gets the same numbers. Set
``decay_bias=False`` (per group or for all) to leave 1-D parameters (biases, batch-norm scales and shifts)
out of weight decay and L1, as CS231n suggests: their few values do not overfit, and decaying a BN scale
fights the normalisation.
"""
from .adagrad import AdaGrad
from .adam import Adam, AdamW
from .clip import apply_max_norm_, clip_grad_norm_, clip_grad_value_
from .lbfgs import LBFGS
from .optimizer import NonFiniteGradientError, Optimizer
from .rmsprop import RMSProp
from .sgd import SGD

Adagrad, RMSprop = AdaGrad, RMSProp   # torch.optim's spellings

__all__ = ["Optimizer", "SGD", "AdaGrad", "RMSProp", "Adam", "AdamW", "LBFGS", "NonFiniteGradientError", "Adagrad",
           "RMSprop", "clip_grad_norm_", "clip_grad_value_", "apply_max_norm_"]
