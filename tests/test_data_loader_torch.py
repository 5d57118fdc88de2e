"""torch interop of cnnkit.data: Trainer.fit and evaluate on a torch DataLoader (numpy batches sharing the
tensors' memory, resume), and Normalize against torch's arithmetic (transforms.Normalize's: cast, sub, div)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import data as D

torch = pytest.importorskip("torch")
TD = torch.utils.data


# ---------------------------------------------------------------- Normalize

def torch_normalize(x, mean, std):
    """torchvision.transforms.functional.normalize on a batch, without torchvision."""
    t = torch.from_numpy(x.copy())
    m = torch.as_tensor(mean, dtype=t.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=t.dtype).view(1, -1, 1, 1)
    return t.sub_(m).div_(s).numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_equals_torch_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 7, 6)).astype(dtype)
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    got = D.Normalize(mean, std)(x)
    assert got.dtype == dtype and got.tobytes() == torch_normalize(x, mean, std).tobytes()
    one = D.Normalize(0.5, [0.25])(x)   # one value for every channel
    assert one.tobytes() == torch_normalize(x, [0.5], [0.25]).tobytes()
    assert not np.shares_memory(got, x)


def test_normalize_composes_after_random_transforms():
    rng = np.random.default_rng(1)
    x = rng.random((6, 3, 8, 8)).astype(np.float32)
    ids = np.arange(10, 16)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.4)
    pipeline = D.Compose([D.RandomCrop(8, padding=2), D.RandomHorizontalFlip(), D.Normalize(mean, std)])
    augmented = D.Compose([D.RandomCrop(8, padding=2), D.RandomHorizontalFlip()])(x, ids=ids, epoch=3, seed=9)
    got = pipeline(x, ids=ids, epoch=3, seed=9)
    assert got.tobytes() == torch_normalize(augmented, mean, std).tobytes()


@pytest.mark.parametrize("args, x, exc, message", [
    (([0.5] * 3, [0.2, 0.0, 0.1]), None, ValueError, r"Normalize: std must be nonzero"),
    (([], [1.0]), None, ValueError, r"Normalize: mean must hold one value per channel, got an empty sequence"),
    (([0.5, 0.5], [1.0, 1.0, 1.0]), None, ValueError, r"Normalize: mean and std must have one value per channel"),
    (("a", [1.0]), None, TypeError, r"Normalize: mean must be a number, got str"),
    (([0.5] * 2, [1.0]), np.zeros((2, 3, 4, 4), np.float32), ValueError,
     r"Normalize: mean has 2 values but x has C = 3 channels"),
    (([0.5], [1e-50]), np.zeros((2, 3, 4, 4), np.float32), ValueError, r"Normalize: std .* is zero in float32"),
    (([0.5], [1.0]), np.zeros((2, 3, 4, 4), np.uint8), TypeError, r"Normalize: x must be float32 or float64"),
])
def test_normalize_checks_its_arguments(args, x, exc, message):
    with pytest.raises(exc, match=message):
        D.Normalize(*args)(x if x is not None else np.zeros((1, 3, 2, 2), np.float32))


# ---------------------------------------------------------------- Trainer on a torch DataLoader

def digits():
    s = D.load_digits()
    return s["train"].x[:320], s["train"].y[:320], s["val"].x, s["val"].y


def trainer(callbacks=()):
    ck.manual_seed(0)
    model = ck.Sequential(ck.Flatten(), ck.Linear(64, 32), ck.ReLU(), ck.Dropout(0.2), ck.Linear(32, 10))
    model.manual_seed(0)
    opt = ck.optim.Adam(model.parameters(), lr=2e-3)
    return ck.Trainer(model, opt, progress=False, callbacks=list(callbacks))


def weights(model):
    return {n: p.data.copy() for n, p in model.named_parameters()}


def same(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


class NumpyPairs(TD.Dataset):
    """A map dataset of numpy samples, batched by a collate_fn that stacks numpy arrays."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def numpy_stack(items):
    return np.stack([a for a, _ in items]), np.array([b for _, b in items])


def test_fit_on_a_torch_loader_equals_fit_on_ours():
    x, y, vx, vy = digits()
    ref = trainer()
    ref.fit(D.DataLoader((x, y), 32), D.DataLoader((vx, vy), 100), epochs=2)
    tensors = TD.DataLoader(TD.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=32)
    arrays = TD.DataLoader(NumpyPairs(x, y), batch_size=32, collate_fn=numpy_stack, num_workers=0)
    val = TD.DataLoader(TD.TensorDataset(torch.from_numpy(vx), torch.from_numpy(vy)), batch_size=100)
    for train in (tensors, arrays):
        tr = trainer()
        tr.fit(train, val, epochs=2)
        assert same(weights(ref.model), weights(tr.model))
        assert tr.history.iterations["loss"] == ref.history.iterations["loss"]
        assert tr.history.metric("val_loss") == ref.history.metric("val_loss")
        assert tr.evaluate(val) == ref.evaluate(D.DataLoader((vx, vy), 100))


def test_torch_batches_are_not_copied():
    x, y, _, _ = digits()
    made = []

    def collate(items):
        batch = TD.default_collate(items)
        made.append(batch)
        return batch
    loader = D.as_loader(TD.DataLoader(TD.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=50,
                                       collate_fn=collate))
    assert isinstance(loader, D.TorchLoader) and len(loader) == 7
    for bx, by in loader:
        tx, ty = made[-1]
        assert isinstance(bx, np.ndarray) and bx.dtype == np.float32 and bx.flags.c_contiguous
        assert np.shares_memory(bx, tx.numpy()) and np.shares_memory(by, ty.numpy())
    # a strided tensor is made contiguous (a copy), with its values
    strided = TD.DataLoader([(torch.from_numpy(x[:4]).transpose(2, 3), torch.from_numpy(y[:4]))], batch_size=None)
    (bx, by), = list(D.as_loader(strided))
    assert bx.flags.c_contiguous and np.array_equal(bx, x[:4].transpose(0, 1, 3, 2))


def test_a_torch_loader_must_yield_pairs():
    loader = D.as_loader(TD.DataLoader(TD.TensorDataset(torch.zeros(4, 1, 2, 2)), batch_size=2))
    with pytest.raises(TypeError, match=r"TorchLoader: the torch DataLoader must yield \(x, y\) pairs, got a list of 1"):
        next(iter(loader))
    with pytest.raises(TypeError, match="TorchLoader: loader must be a torch.utils.data.DataLoader, got list"):
        D.TorchLoader([1, 2])


def _stop_at(step):
    class Stop(ck.train.Callback):
        def on_step_end(self, trainer, s, loss):
            if s == step:
                trainer.stop_training = True
    return Stop()


@pytest.mark.parametrize("sampler", ["sequential", "distributed"])
def test_resume_through_a_torch_loader_is_bit_exact(tmp_path, sampler):
    x, y, vx, vy = digits()
    ds = TD.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))

    def loader():
        if sampler == "sequential":
            return TD.DataLoader(ds, batch_size=32)
        return TD.DataLoader(ds, batch_size=32, sampler=TD.DistributedSampler(ds, num_replicas=1, rank=0, seed=5))
    ref = trainer()
    ref.fit(loader(), (vx, vy), epochs=3)
    first = trainer(callbacks=[_stop_at(15)])
    first.fit(loader(), (vx, vy), epochs=3, checkpoint_dir=str(tmp_path), checkpoint_every_steps=5,
              checkpoint_every=0)
    with open(os.path.join(tmp_path, "latest.json")) as f:
        name = json.load(f)["checkpoint"]
    with open(os.path.join(tmp_path, name)) as f:
        assert json.load(f)["state"]["loader"] == {"epoch": 1, "batch": 5, "batches": 10, "source": "torch"}
    second = trainer(callbacks=[ck.train.Callback()])
    second.fit(loader(), (vx, vy), epochs=3, resume=str(tmp_path))
    assert second.step == ref.step == 30
    assert same(weights(ref.model), weights(second.model))
    assert second.history.iterations["loss"] == ref.history.iterations["loss"]


def test_distributed_sampler_is_told_the_epoch():
    ds = TD.TensorDataset(torch.arange(20.0).view(20, 1, 1, 1), torch.arange(20))
    sampler = TD.DistributedSampler(ds, num_replicas=1, rank=0, seed=3)
    loader = D.as_loader(TD.DataLoader(ds, batch_size=5, sampler=sampler))
    for epoch in range(3):
        ref = TD.DistributedSampler(ds, num_replicas=1, rank=0, seed=3)
        ref.set_epoch(epoch)
        assert np.concatenate([b for _, b in loader]).tolist() == list(ref)
    loader.set_epoch(1)
    ref.set_epoch(1)
    assert np.concatenate([b for _, b in loader]).tolist() == list(ref)


def test_cnnkit_never_imports_torch():
    code = ("import sys, numpy as np, cnnkit as ck\n"
            "x, y = np.zeros((8, 1, 4, 4), np.float32), np.arange(8)\n"
            "m = ck.Sequential(ck.Flatten(), ck.Linear(16, 8))\n"
            "ck.Trainer(m, ck.optim.SGD(m.parameters(), lr=0.1), progress=False).fit((x, y), (x, y), epochs=1)\n"
            "list(ck.data.DataLoader((x, y), 4, num_workers=2, transform=ck.data.Normalize(0.5, 0.2)))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
