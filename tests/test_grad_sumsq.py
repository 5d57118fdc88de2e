# The global gradient norm (_C.grad_sumsq, behind gradient clipping and the optimizers' finite check) has
# the same bits at every thread count and in every run: the sum is cut into fixed blocks of 4096 elements,
# element i of a block adds into lane i % 16, a block's lanes add in lane order and the blocks in block
# order. _same_partition() computes exactly that in numpy, and float32 squares are exact in float64, so
# for float32 it must agree bit for bit. The other float sums over many elements that a CPU kernel splits
# across threads (batchnorm statistics and backward, the bias gradient) sum each channel on one thread and
# are checked here for the same independence of the thread count.
import numpy as np
import pytest

import cnnkit as ck
from cnnkit import _C, ops

BLOCK, LANES = 4096, 16
COUNTS = (1, 2, 3, 4, 8)


def _same_partition(g):
    """The kernel's summation order in numpy: lanes in element order, lanes of a block in lane order, blocks
    in block order (padding with zeros adds exact zeros)."""
    sq = g.astype(np.float64) ** 2
    nblocks = -(-sq.size // BLOCK)
    sq = np.concatenate([sq, np.zeros(nblocks * BLOCK - sq.size)]).reshape(nblocks, BLOCK // LANES, LANES)
    lanes = np.zeros((nblocks, LANES))
    for k in range(BLOCK // LANES):
        lanes += sq[:, k, :]
    blocks = lanes[:, 0].copy()
    for j in range(1, LANES):
        blocks += lanes[:, j]
    return float(np.cumsum(blocks)[-1])  # cumsum adds in index order


def _wide_gradient(n, dtype, seed):
    """Values spread over 12 decades, so the order of the float64 additions shows in the last bits."""
    g = np.random.default_rng(seed)
    return (g.standard_normal(n) * 10.0 ** g.uniform(-6, 6, n)).astype(dtype)


def _at_each_count(threads, fn, repeats=2):
    out = {}
    for n in COUNTS:
        threads(n)
        out[n] = [fn() for _ in range(repeats)]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_sumsq_is_bitwise_equal_across_thread_counts_and_runs(threads, dtype):
    g = _wide_gradient(5_000_003, dtype, seed=1)  # a partial last block, blocks not a multiple of 4
    results = _at_each_count(threads, lambda: _C.grad_sumsq(g))
    first = results[1][0]
    assert first[1] is True
    for n, runs in results.items():
        for r in runs:
            assert r[1] is True
            assert r[0].hex() == first[0].hex(), f"{n} threads: {r[0]!r} != 1 thread: {first[0]!r}"
    exact = float(np.sum(g.astype(np.float64) ** 2))
    assert first[0] == pytest.approx(exact, rel=1e-12)
    if dtype == np.float32:
        assert first[0].hex() == _same_partition(g).hex()
    else:  # float64 squares round (and may fuse with the add), so only close to the same order
        assert first[0] == pytest.approx(_same_partition(g), rel=1e-14)


@pytest.mark.parametrize("n", [1, 15, 16, 4095, 4096, 4097, 4 * 4096, 4 * 4096 + 17, 9 * 4096 + 5])
def test_grad_sumsq_matches_the_same_partition_at_block_edges(threads, n):
    g = _wide_gradient(n, np.float32, seed=n)
    for t in (1, 3):
        threads(t)
        s, finite = _C.grad_sumsq(g)
        assert finite is True
        assert s.hex() == _same_partition(g).hex()


def test_grad_sumsq_finite_flag_at_every_thread_count(threads):
    g = _wide_gradient(300_001, np.float32, seed=7)
    for t in COUNTS:
        threads(t)
        assert _C.grad_sumsq(g)[1] is True
        for i in (0, 4096 * 5 + 3, g.size - 1):  # first block, inside a group, the partial last block
            for bad in (np.nan, np.inf, -np.inf):
                h = g.copy()
                h[i] = bad
                assert _C.grad_sumsq(h)[1] is False


def test_clip_grad_norm_is_bitwise_equal_across_thread_counts(threads):
    g = _wide_gradient(3_000_001, np.float32, seed=2)
    norms = []
    for t in COUNTS:
        threads(t)
        p = ck.Parameter(np.zeros(g.size, np.float32))
        p.grad[...] = g
        norms.append(ck.optim.clip_grad_norm_([p], 1.0))
    assert len({x.hex() for x in norms}) == 1, norms


def test_batchnorm_and_bias_sums_do_not_depend_on_the_thread_count(threads):
    g = np.random.default_rng(5)
    x = _wide_gradient(8 * 6 * 64 * 64, np.float32, seed=3).reshape(8, 6, 64, 64)
    dy = g.standard_normal(x.shape).astype(np.float32)

    def sums():
        mean, var = ops.batchnorm_stats(x)
        invstd = (1.0 / np.sqrt(var + 1e-5)).astype(np.float32)
        dx, sdy, dot = ops.batchnorm_bwd(dy, x, mean, invstd)
        return [a.tobytes() for a in (mean, var, dx, sdy, dot, ops.conv2d_bwd_bias(dy))]

    results = _at_each_count(threads, sums)
    first = results[1][0]
    for runs in results.values():
        for r in runs:
            assert r == first
