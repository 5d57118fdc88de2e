"""DataLoader as torch's: each iter() is a fresh pass, shuffle off by default, num_workers threads whose batches
equal the single-threaded ones bit for bit, worker errors raised in the caller, no leaked threads, collate_fn
with torch's per-sample items, pin_memory accepted."""
import gc
import threading
import time

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import data as D
from helpers.loader_helpers import collect, dataset


def aug():
    return D.Compose([D.RandomCrop(8, padding=2), D.RandomHorizontalFlip(), D.ColorJitter(0.2, 0.2, 0.2),
                      D.Normalize([0.1, -0.2, 0.3], [0.5, 2.0, 1.5])])


def test_each_iter_is_a_fresh_pass_as_in_torch():
    torch = pytest.importorskip("torch")
    x = np.arange(12, dtype=np.float32).reshape(12, 1, 1, 1)
    y = np.arange(12)
    ours = D.DataLoader((x, y), 4, shuffle=True, seed=7)
    theirs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=4, shuffle=True)
    for loader in (ours, theirs):
        next(iter(loader))
        next(iter(loader))   # two peeks
        assert len(list(loader)) == 3 == len(loader)   # the loop still gets a whole pass
    # the peeks took epochs 0 and 1, the loop epoch 2; the next pass is epoch 3 unless set_epoch says otherwise
    fresh = D.DataLoader((x, y), 4, shuffle=True, seed=7)
    first = [b for _, b in fresh]
    np.testing.assert_array_equal(np.concatenate(first), fresh.order(0))
    np.testing.assert_array_equal(np.concatenate([b for _, b in fresh]), fresh.order(1))
    assert fresh.epoch == 2 and fresh.state_dict()["batch"] == 0
    fresh.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate([b for _, b in fresh]), fresh.order(0))
    assert not np.array_equal(fresh.order(0), fresh.order(1))


def test_state_dict_follows_the_latest_pass_and_load_resumes_it():
    ds = dataset()
    loader = D.DataLoader(ds, 8, shuffle=True, seed=4, transform=aug())
    full = collect(D.DataLoader(ds, 8, shuffle=True, seed=4, transform=aug()))
    it = iter(loader)
    got = [next(it) for _ in range(3)]
    assert loader.state_dict()["epoch"] == 0 and loader.state_dict()["batch"] == 3
    state = loader.state_dict()
    del it
    resumed = D.DataLoader(ds, 8, shuffle=True, seed=4, transform=aug(), num_workers=2)
    resumed.load_state_dict(state)
    got += collect(resumed)
    assert len(got) == len(full) == 7
    for (x1, y1), (x2, y2) in zip(got, full):
        assert x1.tobytes() == x2.tobytes() and np.array_equal(y1, y2)
    # a pass left after its last batch: the saved position is the next epoch's start
    loader.load_state_dict({**state, "batch": 7})
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 0
    np.testing.assert_array_equal(np.concatenate([b for _, b in loader]), ds.y[loader.order(1)])


def test_shuffle_defaults_to_false_as_in_torch():
    torch = pytest.importorskip("torch")
    ds = dataset()
    for _ in range(2):   # every pass serves 0..N-1
        np.testing.assert_array_equal(np.concatenate([y for _, y in D.DataLoader(ds, 8)]), ds.y)
    assert torch.utils.data.DataLoader(range(5)).sampler.__class__.__name__ == "SequentialSampler"


@pytest.mark.parametrize("prefetch_factor", [1, 3])
def test_batches_do_not_depend_on_num_workers(prefetch_factor):
    ds = dataset()
    ref = D.DataLoader(ds, 8, shuffle=True, seed=13, transform=aug(), num_workers=0)
    want = collect(ref) + collect(ref)   # two epochs
    for nw in (1, 2, 3):
        loader = D.DataLoader(ds, 8, shuffle=True, seed=13, transform=aug(), num_workers=nw,
                              prefetch_factor=prefetch_factor)
        got = collect(loader) + collect(loader)
        assert len(got) == len(want) == 14
        for (x1, y1), (x2, y2) in zip(got, want):
            assert x1.tobytes() == x2.tobytes() and np.array_equal(y1, y2)


class BadSample(KeyError):
    pass


@pytest.mark.parametrize("num_workers", [0, 1, 2, 3])
def test_a_worker_error_reaches_the_caller_with_its_type(num_workers):
    ds = dataset()

    def transform(x):
        if np.array_equal(x[0], ds.x[24]):   # batch 3
            raise BadSample("sample 99 is corrupt")
        return x

    loader = D.DataLoader(ds, 8, transform=transform, num_workers=num_workers)
    seen = []
    with pytest.raises(BadSample, match="sample 99 is corrupt") as info:
        for x, _ in loader:
            seen.append(x)
    assert isinstance(info.value, KeyError) and len(seen) == 3
    for b, x in enumerate(seen):   # the batches before it were handed out, in order
        np.testing.assert_array_equal(x, ds.x[b * 8:(b + 1) * 8])


def _settle(expected, timeout=5.0):
    end = time.monotonic() + timeout
    while threading.active_count() > expected and time.monotonic() < end:
        time.sleep(0.01)
    return threading.active_count()


@pytest.mark.parametrize("num_workers", [1, 3])
def test_an_abandoned_iterator_joins_its_workers(num_workers):
    gc.collect()
    base = threading.active_count()
    ds = dataset(n=400)
    loader = D.DataLoader(ds, 4, shuffle=True, transform=aug(), num_workers=num_workers, prefetch_factor=1)
    it = iter(loader)
    next(it)
    assert threading.active_count() == base + num_workers   # the workers wait on their full queues
    del it
    assert _settle(base) == base
    for i, _ in enumerate(loader):   # a loop left by break
        if i == 2:
            break
    assert _settle(base) == base
    next(iter(loader))               # a peek
    assert _settle(base) == base
    with pytest.raises(RuntimeError, match="stop"):
        for _ in loader:
            raise RuntimeError("stop")
    gc.collect()
    assert _settle(base) == base


def test_collate_fn_gets_torch_s_per_sample_items():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 2, 3, 3)).astype(np.float32)
    y = rng.integers(0, 5, 10)
    seen_ours, seen_torch = [], []
    ours = D.DataLoader((x, y), 4, collate_fn=lambda items: seen_ours.append(items) or len(items))
    theirs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=4, collate_fn=lambda items: seen_torch.append(items) or len(items))
    assert list(ours) == list(theirs) == [4, 4, 2]
    assert len(seen_ours) == len(seen_torch) == 3
    for a, b in zip(seen_ours, seen_torch):
        assert len(a) == len(b)
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(xa, xb.numpy())
            assert int(ya) == int(yb)
    # torch's default_collate over our items stacks them into our vectorised batch
    stacked = list(D.DataLoader((x, y), 4, collate_fn=torch.utils.data.default_collate, num_workers=2))
    for (tx, ty), (nx, ny) in zip(stacked, D.DataLoader((x, y), 4)):
        assert tx.numpy().tobytes() == nx.tobytes() and np.array_equal(ty.numpy(), ny)


def test_collate_fn_with_a_transform_and_a_dataset_of_samples():
    class Samples:   # a torch-style map dataset: one (x, y) per int index
        def __len__(self):
            return 9

        def __getitem__(self, i):
            return np.full((1, 4, 4), float(i), np.float32), i

    def stack(items):
        return np.stack([a for a, _ in items]), np.array([b for _, b in items])

    t = D.RandomHorizontalFlip()
    loader = D.DataLoader(Samples(), 4, shuffle=True, seed=2, collate_fn=stack, transform=t)
    for b, (x, y) in enumerate(loader):
        idx = loader.order(0)[b * 4:(b + 1) * 4]
        np.testing.assert_array_equal(y, idx)
        ref = t(np.stack([np.full((1, 4, 4), float(i), np.float32) for i in idx]), ids=idx, epoch=0, seed=2)
        assert x.tobytes() == ref.tobytes()
    with pytest.raises(TypeError, match=r"collate_fn must return a pair \(x, y\) when a transform"):
        list(D.DataLoader(Samples(), 4, collate_fn=lambda items: items[0][0], transform=t))


def test_pin_memory_is_accepted_and_changes_nothing():
    ds = dataset()
    a = collect(D.DataLoader(ds, 8, pin_memory=True))
    b = collect(D.DataLoader(ds, 8))
    assert all(x1.tobytes() == x2.tobytes() for (x1, _), (x2, _) in zip(a, b))


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"num_workers": -1}, ValueError, r"DataLoader: num_workers must be >= 0, got -1"),
    ({"num_workers": 1.5}, TypeError, r"DataLoader: num_workers must be an int, got float"),
    ({"num_workers": 0, "prefetch_factor": 2}, ValueError,
     r"DataLoader: prefetch_factor needs num_workers > 0 .* got prefetch_factor=2 with num_workers=0"),
    ({"num_workers": 2, "prefetch_factor": 0}, ValueError, r"DataLoader: prefetch_factor must be >= 1, got 0"),
    ({"collate_fn": 3}, TypeError, r"DataLoader: collate_fn must be callable or None, got int"),
    ({"pin_memory": "yes"}, TypeError, r"DataLoader: pin_memory must be a bool, got str"),
])
def test_bad_worker_arguments(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        D.DataLoader(dataset(), 8, **kwargs)


def test_prefetch_is_the_older_spelling_of_one_worker():
    ds = dataset()
    assert D.DataLoader(ds, 8).num_workers == 1
    assert D.DataLoader(ds, 8, prefetch=False).num_workers == 0
    assert D.DataLoader(ds, 8, prefetch=False, num_workers=2).num_workers == 2


def test_an_empty_dataset_gives_empty_passes_in_epoch_order():
    loader = D.DataLoader((np.zeros((0, 1, 2, 2), np.float32), np.zeros(0, np.int64)), 4, num_workers=2)
    assert len(loader) == 0 and loader.state_dict()["epoch"] == 0
    assert list(loader) == [] and loader.state_dict()["epoch"] == 1
    assert list(loader) == [] and loader.state_dict()["epoch"] == 2


def _fit(loader, **kw):
    ck.manual_seed(0)
    model = ck.Sequential(ck.Conv2d(3, 4, 3, padding=1), ck.ReLU(), ck.Flatten(), ck.Dropout(0.2),
                          ck.Linear(4 * 8 * 8, 10))
    model.manual_seed(0)
    tr = ck.Trainer(model, ck.optim.Adam(model.parameters(), lr=1e-3), progress=False, callbacks=kw.pop("cb", []))
    tr.fit(loader, epochs=2, **kw)
    return tr


def test_training_and_resume_do_not_depend_on_num_workers(tmp_path):
    ds = dataset(n=80)

    def loader(nw):
        return D.DataLoader(ds, 16, shuffle=True, seed=3, transform=aug(), num_workers=nw)

    class Stop(ck.train.Callback):
        def on_step_end(self, trainer, step, loss):
            if step == 7:
                trainer.stop_training = True
    ref = _fit(loader(0))
    first = _fit(loader(3), cb=[Stop()], checkpoint_dir=str(tmp_path), checkpoint_every_steps=7, checkpoint_every=0)
    assert first.step == 7
    resumed = _fit(loader(2), cb=[ck.train.Callback()], resume=str(tmp_path))
    assert resumed.step == ref.step == 10
    assert resumed.history.iterations["loss"] == ref.history.iterations["loss"]
    for (_, a), (_, b) in zip(ref.model.named_parameters(), resumed.model.named_parameters()):
        assert a.data.tobytes() == b.data.tobytes()
