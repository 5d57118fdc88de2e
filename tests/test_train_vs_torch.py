# The same model and hyperparameters trained with PyTorch on the bundled digits reach an accuracy within
# 1 point of cnnkit's (same architecture, init scheme, Adam, cosine schedule, batch size, epochs). Prints
# the per-epoch time of each.
import time

import numpy as np
import pytest

import cnnkit as ck
from helpers.train_helpers import digits, digits_net

EPOCHS, BATCH, LR = 8, 32, 2e-3


def _torch_run(data, seed):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Dropout(0.25), nn.Linear(64, 10))
    for m in net.modules():  # He initialisation with zero biases, as cnnkit's defaults
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    x, y = data["train"][np.arange(len(data["train"]))]
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        net.train()
        for idx in torch.randperm(len(yt), generator=g).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    seconds = (time.perf_counter() - t0) / EPOCHS
    net.eval()
    xs, ys = data["test"][np.arange(len(data["test"]))]
    with torch.no_grad():
        acc = float((net(torch.from_numpy(np.ascontiguousarray(xs))).argmax(1).numpy() == ys).mean())
    return acc, seconds


def test_cnnkit_and_torch_reach_the_same_accuracy_on_digits():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(ck.get_num_threads())
    data = digits()
    accs, times = [], []
    for seed in (0, 1):
        model = digits_net(seed)
        opt = ck.optim.Adam(model.parameters(), lr=LR)
        tr = ck.Trainer(model, opt, schedule=ck.schedules.Cosine(opt, T_max=EPOCHS), progress=False, ratio_every=0)
        t0 = time.perf_counter()
        tr.fit(data["train"], None, epochs=EPOCHS, batch_size=BATCH, seed=seed)
        times.append((time.perf_counter() - t0) / EPOCHS)
        accs.append(tr.evaluate(data["test"])["acc"])
    t_accs, t_times = zip(*(_torch_run(data, seed) for seed in (0, 1)))
    print(f"digits test accuracy, mean of 2 seeds: cnnkit {np.mean(accs):.4f} {accs}, torch {np.mean(t_accs):.4f} "
          f"{list(t_accs)}; seconds per epoch: cnnkit {np.mean(times):.3f}, torch {np.mean(t_times):.3f} "
          f"(torch/cnnkit {np.mean(t_times) / np.mean(times):.2f})")
    assert abs(np.mean(accs) - np.mean(t_accs)) <= 0.01
