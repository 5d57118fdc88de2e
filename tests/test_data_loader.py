"""DataLoader: every sample once per epoch, seeded per-epoch shuffles, drop_last, prefetch equal to the plain
path, and a resumed epoch that yields exactly the remaining batches, bit for bit."""
import json
import threading

import numpy as np
import pytest

import cnnkit as ck
from cnnkit import data as D
from helpers.loader_helpers import collect, dataset


def aug():
    return D.Compose([D.RandomCrop(8, padding=2), D.RandomHorizontalFlip(), D.ColorJitter(0.2, 0.2, 0.2)])


def test_epoch_covers_dataset_once_and_reshuffles():
    ds = dataset()
    loader = D.DataLoader(ds, 8, shuffle=True, seed=3)
    assert len(loader) == 7
    e0 = collect(loader)
    e1 = collect(loader)
    assert [len(y) for _, y in e0] == [8] * 6 + [5]
    for ep in (e0, e1):
        ys = np.concatenate([y for _, y in ep])
        xs = np.concatenate([x for x, _ in ep])
        np.testing.assert_array_equal(np.sort(xs[:, 0, 0, 0]), np.sort(ds.x[:, 0, 0, 0]))
        assert len(ys) == 53
    assert not np.array_equal(np.concatenate([y for _, y in e0]), np.concatenate([y for _, y in e1]))
    # the order is a pure function of (seed, epoch)
    np.testing.assert_array_equal(loader.order(1), D.epoch_permutation(53, 3, 1))
    assert sorted(loader.order(0)) == list(range(53))
    assert loader.epoch == 2


def test_no_shuffle_and_drop_last():
    ds = dataset()
    loader = D.DataLoader(ds, 10, shuffle=False, drop_last=True)
    batches = collect(loader)
    assert len(loader) == len(batches) == 5
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), ds.x[:50])


@pytest.mark.parametrize("prefetch", [True, False])
def test_resume_mid_epoch_is_bit_exact(prefetch):
    ds = dataset()
    ref = D.DataLoader(ds, 8, shuffle=True, seed=11, transform=aug(), prefetch=prefetch)
    full = collect(ref) + collect(ref)  # two epochs uninterrupted
    a = D.DataLoader(ds, 8, shuffle=True, seed=11, transform=aug(), prefetch=prefetch)
    got = collect(a) + collect(a, k=3)
    state = json.loads(json.dumps(a.state_dict()))  # JSON-able
    assert state["epoch"] == 1 and state["batch"] == 3
    b = D.DataLoader(ds, 8, shuffle=True, seed=11, transform=aug(), prefetch=not prefetch)
    b.load_state_dict(state)
    got += collect(b)
    assert len(got) == len(full) == 14
    for (x1, y1), (x2, y2) in zip(got, full):
        assert x1.tobytes() == x2.tobytes() and np.array_equal(y1, y2)
    assert b.state_dict()["epoch"] == 2 and b.state_dict()["batch"] == 0


def test_prefetch_equals_plain_at_1_and_2_threads():
    ds = dataset()
    old = ck.get_num_threads()
    try:
        ck.set_num_threads(1)
        a = collect(D.DataLoader(ds, 16, shuffle=True, seed=5, transform=aug(), prefetch=False))
        ck.set_num_threads(2)
        b = collect(D.DataLoader(ds, 16, shuffle=True, seed=5, transform=aug(), prefetch=True))
    finally:
        ck.set_num_threads(old)
    for (x1, _), (x2, _) in zip(a, b):
        assert x1.tobytes() == x2.tobytes()


def test_end_of_epoch_state_and_early_break_do_not_hang():
    ds = dataset()
    loader = D.DataLoader(ds, 8, shuffle=True, seed=1)
    collect(loader, k=7)  # all 7 batches, then break before StopIteration
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 0
    collect(loader, k=2)
    assert loader.state_dict() == {**loader.state_dict(), "epoch": 1, "batch": 2}
    assert threading.active_count() < 5  # prefetch threads were joined


def test_transform_error_reaches_the_caller():
    def boom(x):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        collect(D.DataLoader(dataset(), 8, transform=boom))


def test_pair_dataset_and_bad_arguments():
    x, y = np.zeros((5, 1, 2, 2), np.float32), np.arange(5)
    assert sum(len(b) for _, b in D.DataLoader((x, y), 2)) == 5
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        D.DataLoader((x, y), 0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        D.DataLoader((x, y), 2.0)
    with pytest.raises(TypeError, match="shuffle must be a bool"):
        D.DataLoader((x, y), 2, shuffle=1)
    with pytest.raises(ValueError, match="same length"):
        D.DataLoader((x, y[:4]), 2)
    with pytest.raises(TypeError, match="transform must be callable"):
        D.DataLoader((x, y), 2, transform=3)
    with pytest.raises(TypeError, match="dataset must be"):
        D.DataLoader(5, 2)
    loader = D.DataLoader((x, y), 2, shuffle=True, seed=1)
    with pytest.raises(ValueError, match="saved seed=2 differs"):
        loader.load_state_dict({**loader.state_dict(), "seed": 2})
    with pytest.raises(ValueError, match="batch must be <= 3"):
        loader.load_state_dict({**loader.state_dict(), "batch": 4})


def test_batches_are_keyed_by_dataset_index_epoch_and_seed():
    ds = dataset()
    t = aug()
    loader = D.DataLoader(ds, 8, shuffle=True, seed=21, transform=t, prefetch=False)
    collect(loader)  # epoch 0
    order = loader.order(1)
    for b, (x, y) in enumerate(loader):  # epoch 1
        idx = order[b * 8:(b + 1) * 8]
        np.testing.assert_array_equal(y, ds.y[idx])
        assert x.tobytes() == t(np.ascontiguousarray(ds.x[idx]), ids=idx, epoch=1, seed=21).tobytes()


def test_digits_train_loop_smoke():
    s = D.load_digits()
    pre = D.ChannelStandardize().fit(s["train"].x)
    loader = D.DataLoader(s["train"], 100, shuffle=True, seed=0,
                          transform=D.Compose([pre, D.RandomCrop(8, padding=1), D.RandomAffine(10)]))
    xs = [x for x, _ in loader]
    assert len(xs) == 12 and xs[0].shape == (100, 1, 8, 8) and xs[-1].shape == (97, 1, 8, 8)
    assert all(x.dtype == np.float32 and np.isfinite(x).all() for x in xs)


@pytest.mark.parametrize("prefetch", [True, False])
def test_gather_buffer_is_never_handed_out(prefetch):
    ds = dataset()
    for transform in (lambda v: v, lambda v: v[:, :, 1:, :], D.Compose([lambda v: v])):
        batches = collect(D.DataLoader(ds, 8, shuffle=True, seed=2, transform=transform, prefetch=prefetch))
        order = D.epoch_permutation(53, 2, 0)
        loader = D.DataLoader(ds, 8, shuffle=True, seed=2, prefetch=prefetch, transform=transform)
        kept = [x for x, _ in loader]  # held without copying, while later batches are built
        for b, ((x, _), k) in enumerate(zip(batches, kept)):
            ref = transform(np.ascontiguousarray(ds.x[order[b * 8:(b + 1) * 8]]))
            np.testing.assert_array_equal(x, ref)
            np.testing.assert_array_equal(k, ref)


@pytest.mark.parametrize("bad", [np.zeros((4, 1, 2, 2), np.float32), "abcd", b"abcd"], ids=["array", "str", "bytes"])
def test_a_bare_array_or_string_is_not_a_dataset(bad):
    with pytest.raises(TypeError, match=rf"DataLoader: dataset must be .* got a bare {type(bad).__name__} \(no labels\); pass \(x, y\)"):
        D.DataLoader(bad, 2)


@pytest.mark.parametrize("args, exc, message", [
    ((-1, 0, 0), ValueError, r"epoch_permutation: n must be >= 0, got -1"),
    ((5, -1, 0), ValueError, r"epoch_permutation: seed must be >= 0, got -1"),
    ((5, 0, -1), ValueError, r"epoch_permutation: epoch must be >= 0, got -1"),
    ((5.0, 0, 0), TypeError, r"epoch_permutation: n must be an int, got float"),
])
def test_epoch_permutation_checks_its_arguments(args, exc, message):
    with pytest.raises(exc, match=message):
        D.epoch_permutation(*args)
