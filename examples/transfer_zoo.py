"""Transfer learning with a zoo model, the lecture's table in action.

1. Pre-train a CIFAR ResNet-20 (ck.zoo.resnet20) on digits 0-4 and export its weights as a PyTorch-style
   state dict (safetensors, torchvision key names), as one would download an ImageNet model.
2. Move to a different task, digits 5-9, with little, more or all of its training data. For each amount,
   load the pretrained weights, replace the head, and freeze less as the data grows:
       20 images per class   -> freeze(up_to="layer3"): only the new fc learns (a linear classifier), or
                                freeze(up_to="layer2"): the task differs, so earlier features are safer
       60 images per class   -> freeze(up_to="layer2"): fine-tune layer3 and fc, layer3 at a lower lr
       all (~600 images)     -> freeze(up_to="conv1") : fine-tune nearly everything
   and compare with training the same network from scratch on the same data. BatchNorm layers in frozen
   blocks keep their pretrained statistics (inference mode) while the rest trains.

A run on 2 cores printed (test accuracy on digits 5-9):
    images/class  frozen up to  trainable  transfer   scratch
              20        layer3        325     0.805     0.887
              20        layer2    203,845     0.910     0.887
              60        layer2    203,845     0.947     0.977
             121         conv1    268,965     0.977     1.000
Digits 5-9 differ from 0-4, so the last stage's features are too specific for a linear classifier alone;
keeping only the earlier stages frozen beats training from scratch when data is scarce, and as the data
grows, unfreezing more lets the network catch up with (here: fall just behind) training from scratch,
which is the lecture's point that pretrained features matter most when labelled data is scarce.

    python examples/transfer_zoo.py            (about a minute on 2 cores)
"""
import os
import tempfile

import numpy as np

import cnnkit as ck

s = ck.data.load_digits()


def subset(ds, classes, per_class=None, seed=0):
    x, y = ds[np.arange(len(ds))]
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    return np.ascontiguousarray(x[idx]), (y[idx] - min(classes)).astype(np.int64)


def fit(model, opt, data, epochs, batch_size=32):
    tr = ck.Trainer(model, opt, progress=False)
    tr.fit(data, None, epochs=epochs, batch_size=batch_size, plots=False)
    return tr


# 1. pre-train on digits 0-4 and export the weights the PyTorch way
pre = ck.zoo.resnet20(num_classes=5, in_channels=1, seed=0)
tr = fit(pre, ck.optim.Adam(pre.parameters(), lr=2e-3), subset(s["train"], range(5)), epochs=8)
print(f"pretrained on digits 0-4: test accuracy {tr.evaluate(subset(s['test'], range(5)))['acc']:.3f}")
weights = os.path.join(tempfile.mkdtemp(), "resnet20_digits04.safetensors")
ck.zoo.export_torch_state_dict(pre, weights)

# 2. digits 5-9, freezing less as the data grows
test = subset(s["test"], range(5, 10))
plans = [(20, "layer3", 1e-2, {}), (20, "layer2", 1e-3, {}), (60, "layer2", 1e-3, {"layer3": 3e-4}),
         (None, "conv1", 1e-3, {"layer1": 1e-4, "layer2": 3e-4})]
print(f"{'images/class':>12}  {'frozen up to':>12}  {'trainable':>9}  {'transfer':>8}  {'scratch':>8}")
for per_class, up_to, lr, lrs in plans:
    data = subset(s["train"], range(5, 10), per_class=per_class, seed=1)
    epochs = 30 if per_class == 20 else 15 if per_class == 60 else 6
    m = ck.zoo.resnet20(num_classes=5, in_channels=1, seed=1)
    ck.zoo.load_torch_state_dict(m, weights)             # torchvision-style names, every shape checked
    m.replace_head(5, seed=2)                              # a fresh classifier for the new task
    m.freeze(up_to=up_to)                                  # before building the optimizer
    opt = ck.optim.Adam(ck.zoo.param_groups(m, lrs), lr=lr)
    acc = fit(m, opt, data, epochs, batch_size=min(32, len(data[1]))).evaluate(test)["acc"]
    scratch = ck.zoo.resnet20(num_classes=5, in_channels=1, seed=1)
    acc0 = fit(scratch, ck.optim.Adam(scratch.parameters(), lr=1e-3), data, epochs,
               batch_size=min(32, len(data[1]))).evaluate(test)["acc"]
    ntrain = sum(p.size for p in m.parameters() if p.requires_grad)
    print(f"{per_class or len(data[1]) // 5:>12}  {up_to:>12}  {ntrain:>9,}  {acc:>8.3f}  {acc0:>8.3f}")
