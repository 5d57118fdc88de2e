# cnnkit's own GEMM: every micro-kernel variant (avx512, avx2, generic) against float64 numpy through
# ops.matmul and every conv2d pass, on shapes that cross the micro-tile, packing-chunk and cache-block
# edges (and sample stacking in conv); the CNNKIT_ISA switch and its errors; build_info's report.
# The variant is switched in-process through the private _C._set_isa hook (what CNNKIT_ISA does at load
# time), so CI covers every variant this CPU can run; a variant the CPU lacks is skipped with the reason.
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnkit
from cnnkit import _C, ops

from helpers import reference as R

ISAS = ["avx512", "avx2", "generic"]


@pytest.fixture(params=ISAS)
def isa(request):
    supported = cnnkit.build_info()["gemm_kernels"].split(",")
    if request.param not in supported:
        pytest.skip(f"this CPU and loaded module run only the {supported} micro-kernels, not {request.param}")
    before = cnnkit.build_info()["isa"]
    _C._set_isa(request.param)
    yield request.param
    _C._set_isa(before)


def _rnd(rng, *shape, dtype=np.float32):
    return rng.uniform(-1, 1, shape).astype(dtype)


# (m, n, k): single elements, one tile, tile edges of every variant (4/6/8 rows, 16/48 columns), a depth
# split into several blocks (> 384), a B block split (n * k * 4 > 512 KiB), and more than one A block (> 192).
MATMUL_SHAPES = [(1, 1, 1), (3, 5, 2), (8, 48, 384), (9, 49, 385), (6, 16, 7), (200, 130, 800), (37, 1100, 150),
                 (1, 3000, 64), (250, 3, 1000)]


@pytest.mark.parametrize("m,n,k", MATMUL_SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_on_each_variant_matches_float64(isa, rng, m, n, k, ta, tb):
    a = _rnd(rng, *((k, m) if ta else (m, k)))
    b = _rnd(rng, *((n, k) if tb else (k, n)))
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    out = ops.matmul(a, b, trans_a=ta, trans_b=tb)
    assert out.dtype == np.float32 and out.shape == (m, n)
    R.assert_close(out, ref, reduction=k, scale=1.0, dtype=np.float32)
    # accumulate=True adds into out (+=), whatever the variant
    acc = np.ones((m, n), np.float32)
    ops.matmul(a, b, trans_a=ta, trans_b=tb, out=acc, accumulate=True)
    R.assert_close(acc, ref + 1, reduction=k + 1, scale=1.0, dtype=np.float32)


def test_matmul_ignores_garbage_in_out_when_not_accumulating(isa, rng):
    a, b = _rnd(rng, 13, 70), _rnd(rng, 70, 50)
    out = np.full((13, 50), np.nan, np.float32)
    ops.matmul(a, b, out=out)
    R.assert_close(out, a.astype(np.float64) @ b, reduction=70, scale=1.0, dtype=np.float32)


# conv2d shapes: sample stacking (small planes, many samples: the GEMM's n spans several samples and more
# than one packing chunk), wide planes cut into row tiles, stride, dilation, groups, 1x1 with and without
# stride, kernels wider than the padding (bwd_data then cannot run as a forward conv).
CONV_CASES = [
    dict(N=20, C=3, H=32, W=32, K=10, R=3, S=3, stride=1, padding=1, dilation=1, groups=1),
    dict(N=9, C=5, H=8, W=7, K=13, R=3, S=3, stride=1, padding=1, dilation=1, groups=1),
    dict(N=2, C=4, H=70, W=65, K=6, R=5, S=3, stride=1, padding=(2, 0), dilation=1, groups=1),
    dict(N=3, C=6, H=17, W=19, K=9, R=3, S=3, stride=2, padding=1, dilation=1, groups=3),
    dict(N=4, C=4, H=15, W=14, K=8, R=3, S=2, stride=1, padding=2, dilation=2, groups=2),
    dict(N=5, C=24, H=9, W=9, K=7, R=1, S=1, stride=1, padding=0, dilation=1, groups=1),
    dict(N=5, C=8, H=9, W=11, K=7, R=1, S=1, stride=2, padding=0, dilation=1, groups=1),
    dict(N=2, C=2, H=12, W=12, K=3, R=5, S=5, stride=1, padding=0, dilation=1, groups=1),
    # wide kernels past the dot-product size: backward-weight generates col^T pixel by pixel
    dict(N=3, C=3, H=30, W=27, K=9, R=7, S=7, stride=2, padding=3, dilation=1, groups=1),
    dict(N=2, C=12, H=25, W=26, K=6, R=3, S=5, stride=(1, 3), padding=(1, 4), dilation=(1, 2), groups=2),
]


@pytest.mark.parametrize("c", CONV_CASES, ids=lambda c: f"N{c['N']}C{c['C']}H{c['H']}K{c['K']}R{c['R']}s{c['stride']}")
@pytest.mark.parametrize("threads_n", [1, 2])
def test_conv2d_passes_on_each_variant_match_the_reference(isa, rng, threads, c, threads_n):
    threads(threads_n)
    hp = {k: c[k] for k in ("stride", "padding", "dilation", "groups")}
    x = _rnd(rng, c["N"], c["C"], c["H"], c["W"])
    w = _rnd(rng, c["K"], c["C"] // c["groups"], c["R"], c["S"])
    b = _rnd(rng, c["K"])
    Cg, Kg = c["C"] // c["groups"], c["K"] // c["groups"]
    y = ops.conv2d_fwd(x, w, b, **hp)
    R.assert_close(y, R.conv2d_fwd(x.astype(np.float64), w, b, **hp), reduction=Cg * c["R"] * c["S"] + 1,
                   scale=1.0, dtype=np.float32)
    dy = _rnd(rng, *y.shape)
    dx = ops.conv2d_bwd_data(dy, w, x.shape, **hp)
    R.assert_close(dx, R.conv2d_bwd_data(dy.astype(np.float64), w, x.shape, **hp),
                   reduction=Kg * c["R"] * c["S"], scale=1.0, dtype=np.float32)
    ref_dw = R.conv2d_bwd_weight(dy.astype(np.float64), x, w.shape, **hp)
    n_terms = y.shape[0] * y.shape[2] * y.shape[3]
    dw = ops.conv2d_bwd_weight(dy, x, w.shape, **hp)
    R.assert_close(dw, ref_dw, reduction=n_terms, scale=1.0, dtype=np.float32)
    acc = np.ones(w.shape, np.float32)
    ops.conv2d_bwd_weight(dy, x, w.shape, **hp, out=acc, accumulate=True)
    R.assert_close(acc, ref_dw + 1, reduction=n_terms + 1, scale=1.0, dtype=np.float32)


def test_the_variant_never_changes_shapes_dtypes_or_messages(rng):
    x, w = _rnd(rng, 2, 3, 6, 6), _rnd(rng, 4, 3, 3, 3)
    seen = set()
    for name in cnnkit.build_info()["gemm_kernels"].split(","):
        before = cnnkit.build_info()["isa"]
        _C._set_isa(name)
        try:
            y = ops.conv2d_fwd(x, w)
            with pytest.raises(ValueError) as e:
                ops.conv2d_fwd(x, w[:, :2])
            seen.add((y.shape, y.dtype, str(e.value)))
        finally:
            _C._set_isa(before)
    assert len(seen) == 1


def _child(env_isa, code="import cnnkit; print(cnnkit.build_info()['isa'])"):
    env = {**os.environ, "CNNKIT_ISA": env_isa}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_cnnkit_isa_selects_the_variant_at_import():
    r = _child("generic")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "generic"


def test_build_info_reports_the_variant_and_what_the_cpu_supports():
    info = cnnkit.build_info()
    supported = info["isa_supported"].split(",")
    assert supported[-1] == "generic" and set(supported) <= set(ISAS)
    kernels = info["gemm_kernels"].split(",")
    assert info["isa"] in kernels and set(kernels) <= set(supported)
    if "CNNKIT_ISA" not in os.environ and info["isa_compiled"] != "native":
        # the best level the CPU runs, from CPUID: the module's kernels and its GEMM micro-kernel alike
        assert info["isa"] == info["module_isa"] == supported[0]
        assert kernels == supported


def test_a_bad_cnnkit_isa_fails_at_import_naming_the_choices():
    r = _child("sse9")
    assert r.returncode != 0
    assert "CNNKIT_ISA must be one of avx512, avx2, generic, got 'sse9'" in r.stderr


def test_set_isa_refuses_unknown_names():
    with pytest.raises(ValueError, match="CNNKIT_ISA must be one of avx512, avx2, generic, got 'fast'"):
        _C._set_isa("fast")


@pytest.mark.skipif("avx512" in cnnkit.build_info()["isa_supported"], reason="this CPU runs avx512")
def test_forcing_a_variant_the_cpu_lacks_is_refused():
    r = _child("avx512")
    assert r.returncode != 0
    assert "this CPU cannot run 'avx512'" in r.stderr or "not compiled into this build" in r.stderr
