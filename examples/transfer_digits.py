"""Transfer learning, the lecture's "small dataset, similar data" case: train a ConvNet on digits 0-4,
then reuse its features for digits 5-9 with only 20 examples per class. Every layer except a new head is
frozen (requires_grad = False: no gradient is even computed for them), so only the head learns.

    python examples/transfer_digits.py
"""
import numpy as np

import cnnkit as ck

s = ck.data.load_digits()


def subset(ds, classes, per_class=None, seed=0):
    x, y = ds[np.arange(len(ds))]
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    return np.ascontiguousarray(x[idx]), (y[idx] - min(classes)).astype(np.int64)


# 1. Pre-train on digits 0-4.
ck.manual_seed(0)
features = [ck.Conv2d(1, 16, 3, padding=1), ck.ReLU(), ck.Conv2d(16, 32, 3, padding=1), ck.ReLU(),
            ck.MaxPool2d(2), ck.Flatten(), ck.Linear(512, 64), ck.ReLU()]
base = ck.Sequential(*features, ck.Linear(64, 5))
opt = ck.optim.Adam(base.parameters(), lr=2e-3)
ck.Trainer(base, opt, progress=False).fit(subset(s["train"], range(5)), subset(s["val"], range(5)), epochs=8)

# 2. New head for digits 5-9; freeze everything else.
ck.manual_seed(1)
model = ck.Sequential(*features, ck.Linear(64, 5))          # the same feature layers (shared weights)
for p in model.parameters():
    p.requires_grad = False
head = model[len(model) - 1]
for p in head.parameters():
    p.requires_grad = True
frozen = {n: p.data.copy() for n, p in model.named_parameters() if not p.requires_grad}

few = subset(s["train"], range(5, 10), per_class=20)
opt = ck.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
tr = ck.Trainer(model, opt, progress=False)
tr.fit(few, None, epochs=30, batch_size=20)
acc = tr.evaluate(subset(s["test"], range(5, 10)))["acc"]
unchanged = all(np.array_equal(frozen[n], p.data) for n, p in model.named_parameters() if n in frozen)
print(f"digits 5-9 from 100 labelled images, frozen features: test accuracy {acc:.3f}; "
      f"frozen weights unchanged: {unchanged}")
