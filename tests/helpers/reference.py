# Plain numpy references for every cnnkit kernel: slow, obvious, and independent of the C++ code.
# Convolution is a sum over kernel taps of strided slices (einsum per group), computed in float64;
# max-pooling walks each window in row-major order with PyTorch's CPU rules; dropout draws from a numpy
# Philox-4x32-10 (Salmon et al., SC 2011; checked against the Random123 known-answer vectors in tests).
import math

import numpy as np


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# ---------------------------------------------------------------- conv2d

def conv2d_out_size(n, k, stride, pad, dil):
    """floor((n + 2p - d(k-1) - 1) / s) + 1; may be < 1 for an impossible convolution."""
    return (n + 2 * pad - dil * (k - 1) - 1) // stride + 1


def conv2d_out_shape(x_shape, w_shape, stride=1, padding=0, dilation=1):
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    N, _, H, W = x_shape
    K, _, R, S = w_shape
    return (N, K, conv2d_out_size(H, R, sh, ph, dh), conv2d_out_size(W, S, sw, pw, dw))


def _taps(x_shape, w_shape, stride, padding, dilation):
    """Yield (r, s, row slice, col slice) into the padded input for every kernel tap."""
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    _, _, P, Q = conv2d_out_shape(x_shape, w_shape, stride, padding, dilation)
    if P < 1 or Q < 1:
        raise ValueError(f"impossible convolution: output {(P, Q)}")
    _, _, R, S = w_shape
    for r in range(R):
        for s in range(S):
            yield r, s, slice(r * dh, r * dh + sh * (P - 1) + 1, sh), slice(s * dw, s * dw + sw * (Q - 1) + 1, sw)


def _pad(x, padding):
    ph, pw = pair(padding)
    return np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv2d_fwd(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n, k, p, q] = b[k] + sum_{c, r, s} w[k, c, r, s] * xpad[n, g*Cg + c, p*sh + r*dh, q*sw + s*dw]."""
    N, C, _, _ = x.shape
    K, Cg, _, _ = w.shape
    assert C == Cg * groups and K % groups == 0
    Kg = K // groups
    xp, w = _pad(x, padding), np.asarray(w, dtype=np.float64)
    y = np.zeros(conv2d_out_shape(x.shape, w.shape, stride, padding, dilation))
    for r, s, rows, cols in _taps(x.shape, w.shape, stride, padding, dilation):
        for g in range(groups):
            patch = xp[:, g * Cg:(g + 1) * Cg, rows, cols]
            y[:, g * Kg:(g + 1) * Kg] += np.einsum("ncpq,kc->nkpq", patch, w[g * Kg:(g + 1) * Kg, :, r, s])
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return y


def conv2d_bwd_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    """dx = d(sum(y * dy)) / dx: every tap scatters w^T dy back onto the padded input, then crop."""
    N, C, H, W = x_shape
    K, Cg, _, _ = w.shape
    Kg = K // groups
    ph, pw = pair(padding)
    dy, w = np.asarray(dy, dtype=np.float64), np.asarray(w, dtype=np.float64)
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for r, s, rows, cols in _taps(x_shape, w.shape, stride, padding, dilation):
        for g in range(groups):
            dxp[:, g * Cg:(g + 1) * Cg, rows, cols] += np.einsum(
                "nkpq,kc->ncpq", dy[:, g * Kg:(g + 1) * Kg], w[g * Kg:(g + 1) * Kg, :, r, s])
    return dxp[:, :, ph:ph + H, pw:pw + W]


def conv2d_bwd_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
    """dw[k, c, r, s] = sum_{n, p, q} dy[n, k, p, q] * xpad[n, g*Cg + c, p*sh + r*dh, q*sw + s*dw]."""
    K, Cg, R, S = w_shape
    Kg = K // groups
    xp, dy = _pad(x, padding), np.asarray(dy, dtype=np.float64)
    dw = np.zeros(w_shape)
    for r, s, rows, cols in _taps(x.shape, w_shape, stride, padding, dilation):
        for g in range(groups):
            dw[g * Kg:(g + 1) * Kg, :, r, s] = np.einsum(
                "nkpq,ncpq->kc", dy[:, g * Kg:(g + 1) * Kg], xp[:, g * Cg:(g + 1) * Cg, rows, cols])
    return dw


def conv2d_bwd_bias(dy):
    return np.asarray(dy, dtype=np.float64).sum(axis=(0, 2, 3))


# ---------------------------------------------------------------- maxpool2d

def pool_out_size(n, k, stride, pad, dil, ceil_mode):
    """torch's pooling_output_shape: floor division (// floors a negative numerator, as torch's div_rtn),
    and ceil_mode drops a last window that would start in the right padding. May be < 1 (impossible)."""
    out = (n + 2 * pad - dil * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= n + pad:
        out -= 1
    return out


def pool_window_in_padding(n, k, stride, pad, dil, out):
    """True when some window's taps (o*stride - pad + i*dil, i < k) all miss [0, n): possible only with
    dilation. torch then returns -inf and an index outside the plane; cnnkit refuses such a pooling."""
    return any(all(not (0 <= o * stride - pad + i * dil < n) for i in range(k)) for o in range(out))


def maxpool2d_fwd(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """(y, indices) with PyTorch's CPU semantics.

    Padded cells are -inf and never selected. Within a window, cells are visited in row-major order and a
    cell replaces the running maximum when it is larger or when it is NaN: ties keep the first maximum and
    the LAST NaN wins. A window that holds no cell of the input at all yields -inf and the index torch
    gives it: (first non-negative row of the window's row walk) * W + (first non-negative column).
    """
    (kh, kw) = pair(kernel_size)
    (sh, sw) = pair(kernel_size if stride is None else stride)
    (ph, pw), (dh, dw) = pair(padding), pair(dilation)
    N, C, H, W = x.shape
    P, Q = pool_out_size(H, kh, sh, ph, dh, ceil_mode), pool_out_size(W, kw, sw, pw, dw, ceil_mode)
    if P < 1 or Q < 1:
        raise ValueError(f"impossible pooling: output {(P, Q)}")
    y = np.empty((N, C, P, Q), dtype=x.dtype)
    idx = np.empty((N, C, P, Q), dtype=np.int64)
    for p in range(P):
        rows = [p * sh - ph + r * dh for r in range(kh)]
        for q in range(Q):
            cols = [q * sw - pw + s * dw for s in range(kw)]
            first_r = next(r for r in rows if r >= 0)  # exists: padding <= kernel/2 < kernel
            first_c = next(c for c in cols if c >= 0)
            m = np.full((N, C), -np.inf, dtype=x.dtype)
            mi = np.full((N, C), first_r * W + first_c, dtype=np.int64)
            for ih in rows:
                for iw in cols:
                    if not (0 <= ih < H and 0 <= iw < W):
                        continue  # padding: -inf, never replaces the running maximum
                    v = x[:, :, ih, iw]
                    take = (v > m) | np.isnan(v)
                    m = np.where(take, v, m)
                    mi = np.where(take, ih * W + iw, mi)
            y[:, :, p, q] = m
            idx[:, :, p, q] = mi
    return y, idx


def maxpool2d_bwd(dy, indices, x_shape):
    """dx: dy scattered through the flat per-plane indices, summing where windows share an argmax."""
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W))
    planes = np.repeat(np.arange(N * C), dy.shape[2] * dy.shape[3])
    np.add.at(dx, (planes, indices.reshape(-1)), np.asarray(dy, dtype=np.float64).reshape(-1))
    return dx.reshape(x_shape)


# ---------------------------------------------------------------- relu

def relu_fwd(x):
    """max(x, 0), NaN kept (np.maximum propagates NaN)."""
    return np.maximum(x, np.zeros((), dtype=x.dtype))


def relu_bwd(dy, y):
    """torch's threshold_backward on the output: dy where not (y <= 0), so NaN passes dy."""
    return np.where(y <= 0, np.zeros((), dtype=dy.dtype), dy)


# ---------------------------------------------------------------- Philox-4x32-10 and dropout

_M32 = np.uint64(0xFFFFFFFF)
PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
PHILOX_W = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))


def philox4x32_10(ctr, key):
    """Random123's philox4x32 with 10 rounds; ctr is 4 arrays (or ints) of uint32, key 2. Vectorized."""
    c = [np.asarray(v, dtype=np.uint64) & _M32 for v in ctr]
    k = [np.asarray(v, dtype=np.uint64) & _M32 for v in key]
    for rnd in range(10):
        if rnd:  # the key is bumped between rounds (Weyl sequence)
            k = [(k[0] + PHILOX_W[0]) & _M32, (k[1] + PHILOX_W[1]) & _M32]
        p0 = PHILOX_M[0] * c[0]  # 32 x 32 -> 64 bits: exact in uint64
        p1 = PHILOX_M[1] * c[2]
        hi0, lo0, hi1, lo1 = p0 >> np.uint64(32), p0 & _M32, p1 >> np.uint64(32), p1 & _M32
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
    return tuple(v.astype(np.uint32) for v in c)


def dropout_words(n, seed, offset):
    """The 32-bit word of element i: word i % 4 of Philox(ctr=(lo(i//4), hi(i//4), lo(offset), hi(offset)),
    key=(lo(seed), hi(seed)))."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    words = philox4x32_10((blocks & _M32, blocks >> np.uint64(32), offset & 0xFFFFFFFF, offset >> 32),
                          (seed & 0xFFFFFFFF, seed >> 32))
    return np.stack(words, axis=1).reshape(-1)[:n]


def dropout_threshold(p):
    """ceil(p * 2**32), exact: scaling by a power of two is exact in binary floating point."""
    return math.ceil(p * 2.0**32)


def dropout_mask(shape, p, seed, offset=0):
    n = math.prod(shape)
    return (dropout_words(n, seed, offset).astype(np.uint64) >= dropout_threshold(p)).astype(np.uint8).reshape(shape)


def dropout_scale(p, dtype):
    """1/(1-p) computed in the array's dtype: T(1) / T(1 - p)."""
    dtype = np.dtype(dtype).type
    return dtype(1) / dtype(1.0 - p)


def dropout_fwd(x, p, seed, offset=0):
    """y = (x * mask) * scale, the product torch's native_dropout takes: a dropped -1 gives -0.0 and a
    dropped NaN or Inf gives NaN, so non-finite values are never hidden by the mask."""
    mask = dropout_mask(x.shape, p, seed, offset)
    y = (x * mask.astype(x.dtype)) * dropout_scale(p, x.dtype)
    assert y.dtype == x.dtype
    return y, mask


def dropout_bwd(dy, mask, p):
    """dx = (dy * (mask != 0)) * scale: any non-zero mask byte counts as kept."""
    dx = (dy * (mask != 0).astype(dy.dtype)) * dropout_scale(p, dy.dtype)
    assert dx.dtype == dy.dtype
    return dx


# ---------------------------------------------------------------- comparison and gradient helpers

def assert_close(got, ref, *, reduction, scale, dtype):
    """|got - ref| <= eps * sqrt(reduction) * scale elementwise, where `scale` bounds the magnitude of the
    summed terms (e.g. max|x| * max|w|). eps is 1e-10 for float64 and 1e-5 for float32."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    eps = 1e-10 if np.dtype(dtype) == np.float64 else 1e-5
    tol = eps * math.sqrt(max(reduction, 1)) * max(scale, 1e-30)
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    worst = float(err.max()) if err.size else 0.0
    assert worst <= tol, f"max abs error {worst:.3g} > tol {tol:.3g} (at {np.unravel_index(err.argmax(), err.shape)})"


def numeric_grad(f, x, dy, eps=1e-6):
    """d(sum(f(x) * dy)) / dx by central differences, in float64; x is perturbed in place and restored."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = float(np.sum(f(x) * dy))
        flat[i] = old - eps
        fm = float(np.sum(f(x) * dy))
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g
