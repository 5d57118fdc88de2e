"""Transfer learning helpers: features at any stage, and per-layer learning rates through param groups.

The lecture's table, with cnnkit's calls (``model.freeze`` / ``unfreeze`` / ``replace_head`` live on every
model, see cnnkit.graph.Model):

    =================  ==========================================  ==========================================
                       very similar dataset                         very different dataset
    =================  ==========================================  ==========================================
    very little data   linear classifier on top-layer features:     trouble; try a linear classifier on
                       ``zoo.features(m, "avgpool", x)``, or         features from an earlier stage:
                       ``m.freeze(); m.replace_head(k)``             ``zoo.features(m, "layer2", x)``
    quite a lot        fine-tune a few top layers:                   fine-tune more layers:
                       ``m.freeze(up_to="layer3")``                  ``m.freeze(up_to="layer1")``, with
                                                                     per-stage rates (``param_groups``)
    =================  ==========================================  ==========================================

BatchNorm layers inside frozen blocks stay in inference mode even while the model trains (their running
statistics neither move nor are used in place of the batch's); see Layer.train.
"""
import numpy as np

from ..graph import Model
from ..layer import Layer


class _Prefix(Model):
    """The first nodes of a model, up to a stage: shares the layers (and weights) of the model it came from."""

    def __init__(self, model, path):
        super().__init__(seed=model.model_seed, name=f"{model.name or type(model).__name__}[:{path}]")
        self._n_inputs = model._n_inputs
        head, _, rest = path.partition(".")
        names = [n for n, _, _ in model._nodes]
        if head not in names:
            raise ValueError(f"zoo.features: stage must name a layer of the model, got '{path}' ('{head}' is not "
                             f"one of {names})")
        k = names.index(head)
        keep = {k}
        for i in range(k, -1, -1):          # only the nodes the stage depends on
            if i in keep:
                keep.update(j for j in model._nodes[i][2] if j >= 0)
        remap = {}
        for i in sorted(keep):
            n, layer, ins = model._nodes[i]
            if i == k and rest:
                if not isinstance(layer, Model):
                    raise ValueError(f"zoo.features: '{head}' is a {type(layer).__name__}, it has no stage '{rest}'")
                layer = _Prefix(layer, rest)
            remap[i] = len(self._nodes)
            self._nodes.append((n, layer, [j if j < 0 else remap[j] for j in ins]))


def features(model, stage, x=None, batch_size=256, flatten=False):
    """Features of `model` at `stage` (a node name such as "layer3", "avgpool", "features", or a dotted path
    such as "features.10" or "layer3.1"), for a linear classifier or for inspection.

    With ``x=None``: returns a model that computes them (it shares the layers and weights of `model`; run
    it in eval mode). With an array `x` (N, C, H, W): runs it in batches of `batch_size` in inference mode
    (the modes of all layers are restored afterwards) and returns the (N, ...) features, flattened to
    (N, D) when `flatten` is true."""
    if not isinstance(model, Model):
        raise TypeError(f"zoo.features: model must be a ck model (Graph or Sequential), got {type(model).__name__}")
    if not isinstance(stage, str):
        raise TypeError(f"zoo.features: stage must be a layer name (str), got {type(stage).__name__}")
    sub = _Prefix(model, stage)
    if x is None:
        return sub
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"zoo.features: x must be an array, got {type(x).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"zoo.features: batch_size must be a positive int, got {batch_size!r}")
    modes = [(layer, layer.training) for _, layer in model.named_layers()]
    try:
        for layer, _ in modes:
            layer.training = False
        outs = [sub(np.ascontiguousarray(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    finally:
        for layer, t in modes:
            layer.training = t
        for _, layer in sub.named_layers():
            layer._cache = None
    y = np.concatenate(outs) if outs else np.zeros((0,), dtype=x.dtype)
    return y.reshape(len(x), -1) if flatten else y


def param_groups(model, lrs, **common):
    """Param groups for per-layer learning rates: ``lrs`` maps layer paths (prefixes of parameter names:
    "layer3", "layer4.1", "fc") to a learning rate, each parameter going to its longest matching prefix.
    Trainable parameters that match none form a last group with the optimizer's default lr; frozen ones are
    left out. ``common`` adds hyperparameters to every group (e.g. weight_decay).

        opt = ck.optim.SGD(ck.zoo.param_groups(m, {"layer3": 1e-4, "layer4": 1e-3, "fc": 1e-2}),
                           lr=1e-3, momentum=0.9)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"zoo.param_groups: model must be a ck model, got {type(model).__name__}")
    if not isinstance(lrs, dict):
        raise TypeError(f"zoo.param_groups: lrs must be a dict of layer path -> lr, got {type(lrs).__name__}")
    names = [n for n, _ in model.named_parameters()]
    groups = {k: [] for k in lrs}
    rest = []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        best = None
        for k in lrs:
            if (n == k or n.startswith(k + ".")) and (best is None or len(k) > len(best)):
                best = k
        (groups[best] if best is not None else rest).append(p)
    for k, ps in groups.items():
        if not ps and not any(n == k or n.startswith(k + ".") for n in names):
            raise ValueError(f"zoo.param_groups: '{k}' matches no parameter name of the model")
    out = [dict(common, params=ps, lr=lrs[k]) for k, ps in groups.items() if ps]
    if rest:
        out.append(dict(common, params=rest))
    return out


__all__ = ["features", "param_groups"]
