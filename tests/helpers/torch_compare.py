"""Comparing a cnnkit array with torch's (or numpy's) result: shape, dtype, then the largest absolute error
against a tolerance relative to the reference's largest magnitude."""
import numpy as np


def close(ours, ref, tol, what):
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != torch {ref.shape}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != torch {ref.dtype}"
    scale = max(float(np.abs(ref).max()), 1e-30) if ref.size else 1.0
    err = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
    assert err <= tol * scale, f"{what}: max abs err {err:.3e} > {tol:g} * {scale:.3e}"
