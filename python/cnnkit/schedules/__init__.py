"""Learning-rate schedules (CS231n "annealing the learning rate"; torch.optim.lr_scheduler where it has one).

Every schedule is a closed-form function of a step counter ``t`` (0, 1, 2, ...) and of each param group's
base lr. Bound to an optimizer, construction sets every group's lr to its value at t = 0 and ``step()``
advances t and sets the next value, exactly as torch's schedulers do, so ``step()`` may be called once per
iteration or once per epoch: the counter means whichever you choose. Unbound (``optimizer=None``,
``base_lr=...``) a schedule only computes values: ``values(n)`` lists the first n for plotting.

Where torch has the same schedule the values agree with it (tests/test_schedules.py, 1,000 steps). torch
computes some of them recursively from the previous lr (cosine, polynomial, exponential); cnnkit uses the
closed form, which does not drift, so those agree to rounding (rtol 1e-12), the others exactly.

``state_dict()`` holds a schedule's class name, counter, base lrs and every hyperparameter as plain data (JSON:
checkpoints store it so), and ``load_state_dict`` validates all of it first, then restores it: loading into a
schedule configured differently makes it the saved one, as torch's schedulers do.
"""
from .base import Schedule
from .lr import (Constant, Cosine, CosineWarmRestarts, Cyclic, Exponential, InverseSqrt, InverseTime, MultiStep,
                 OneCycle, Polynomial, SqrtDecay, Step)
from .plateau import ReduceOnPlateau
from .warmup import LinearWarmup
from .compose import LambdaLR, LinearLR, SequentialLR

# torch.optim.lr_scheduler's names for the same schedules (same arguments, same values)
StepLR, MultiStepLR, ExponentialLR, PolynomialLR = Step, MultiStep, Exponential, Polynomial
CosineAnnealingLR, CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR = Cosine, CosineWarmRestarts, Cyclic, OneCycle
ReduceLROnPlateau = ReduceOnPlateau

__all__ = ["Schedule", "Constant", "Step", "MultiStep", "Exponential", "InverseTime", "InverseSqrt",
           "SqrtDecay", "Polynomial", "Cosine", "CosineWarmRestarts", "Cyclic", "OneCycle", "LinearWarmup",
           "ReduceOnPlateau", "LinearLR", "LambdaLR", "SequentialLR", "StepLR", "MultiStepLR", "ExponentialLR",
           "PolynomialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR", "OneCycleLR",
           "ReduceLROnPlateau"]
