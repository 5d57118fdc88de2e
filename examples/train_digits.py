"""Train a small ConvNet on the bundled UCI digits with the Python API: sanity check first, then fit with
a cosine schedule, live augmentation, early stopping and an EMA of the weights; then evaluate and save.

    python examples/train_digits.py            # writes runs/example-digits/
"""

import cnnkit as ck

splits = ck.data.load_digits()
ck.manual_seed(0)
model = ck.Sequential(
    ck.Conv2d(1, 16, 3, padding=1), ck.ReLU(), ck.Conv2d(16, 32, 3, padding=1), ck.ReLU(), ck.MaxPool2d(2),
    ck.Flatten(), ck.Linear(512, 64), ck.ReLU(), ck.Dropout(0.25), ck.Linear(64, 10))
model.manual_seed(0)
print(model.summary((1, 8, 8)))

opt = ck.optim.Adam(model.parameters(), lr=2e-3)
ema = ck.EMA(decay=0.99)
trainer = ck.Trainer(model, opt, "softmax_cross_entropy", schedule=ck.schedules.Cosine(opt, T_max=20),
                     callbacks=[ck.EarlyStopping("val_acc", patience=5), ema])
report = trainer.sanity_check(splits["train"])          # the lecture's checks, before the long run
if not report.passed:
    raise SystemExit("fix the model before training")

# Live augmentation: one-pixel random shifts, drawn from (seed, epoch, sample) so runs reproduce.
loader = ck.data.DataLoader(splits["train"], batch_size=32, shuffle=True, seed=0,
                            transform=ck.data.RandomCrop(8, padding=1))
history = trainer.fit(loader, splits["val"], epochs=20, run_dir="runs/example-digits",
                      checkpoint_dir="runs/example-digits/checkpoints")
print("test:", trainer.evaluate(splits["test"]))
with ema.applied(model):
    print("test with EMA weights:", trainer.evaluate(splits["test"]))
model.save("runs/example-digits/model.safetensors")
print("best val acc", max(history.metric("val_acc")))
