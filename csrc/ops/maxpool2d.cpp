// CPU max-pooling with argmax. One OpenMP task per (n, c) plane block. The common 2x2 stride-2 unpadded
// case has its own loop written as selects, so the compiler vectorizes it; the general loop follows
// torch's cpu_max_pool window walk exactly, so indices and NaN handling match PyTorch.
#include "ops/maxpool2d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "common/check.h"
#include "common/runtime.h"
#include "common/simd.h"

namespace ck {

int64_t pool_output_size(const char* op, const char* dim, int64_t in, int64_t k, int64_t s, int64_t pad, int64_t d,
                         bool ceil_mode) {
  const int64_t eff = add_checked(op, mul_checked(op, d, k - 1), 1);
  const int64_t span = add_checked(op, in, mul_checked(op, 2, pad));
  // torch's pooling_output_shape: floor division (the numerator is negative when the window is larger than
  // the padded input, which ceil_mode still accepts by up to stride - 1).
  const int64_t num = add_checked(op, span - eff, ceil_mode ? s - 1 : 0);
  int64_t out = num / s - (num % s < 0 ? 1 : 0) + 1;  // C++ division truncates toward zero
  if (ceil_mode && (out - 1) * s >= in + pad) --out;  // the last window would start in the right padding
  if (out < 1 && ceil_mode)
    fail(op, "output ", dim, " would be ", out, "; it must be >= 1: kernel ", dim, " with dilation (", eff,
         ") is larger than the padded input (", span, ") plus stride - 1 (", s - 1, ")");
  if (out < 1)
    fail(op, "output ", dim, " would be ", out, "; it must be >= 1: kernel ", dim, " with dilation (", eff,
         ") is larger than the padded input (", span, ")");
  return out;
}

// With dilation, a window can fall wholly into the padding (its taps step over the input). PyTorch then
// returns -inf with an index outside the window (past the plane, or wrapped into the next row), so its
// gradient lands on an unrelated cell; cnnkit refuses the combination instead. Only a window that
// starts in the left padding can do this (one starting at >= 0 has its first tap inside, and ceil_mode
// drops windows starting in the right padding), so only those are checked.
static void check_windows_touch_input(const char* op, const char* dim, int64_t in, int64_t k, int64_t s, int64_t pad,
                                      int64_t d, int64_t out) {
  const int64_t left = std::min(out, (pad + s - 1) / s);
  for (int64_t o = 0; o < left; ++o) {
    const int64_t start = o * s - pad;
    const int64_t first = start >= 0 ? start : start + ((-start + d - 1) / d) * d;  // first tap >= 0
    if (first >= in || first > start + (k - 1) * d)
      fail(op, "with kernel ", k, ", dilation ", d, " and padding ", pad, " the pooling window at output ", dim, " ", o,
           " lies wholly in the padding (input ", dim, " ", in, ")");
  }
}

MaxPool2dParams make_maxpool2d_params(const char* op, const std::vector<int64_t>& xs, int64_t kh, int64_t kw,
                                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                                      bool ceil_mode) {
  CK_CHECK(xs.size() == 4, op, "x must be 4-D (N, C, H, W), got shape ", shape_str(xs));
  for (int64_t d : xs) CK_CHECK(d >= 0, op, "x shape must be non-negative, got ", shape_str(xs));
  CK_CHECK(xs[1] >= 1 && xs[2] >= 1 && xs[3] >= 1, op, "x must have C, H, W >= 1, got shape ", shape_str(xs));
  CK_CHECK(kh >= 1 && kw >= 1, op, "kernel_size must be >= 1, got (", kh, ", ", kw, ")");
  CK_CHECK(sh >= 1 && sw >= 1, op, "stride must be >= 1, got (", sh, ", ", sw, ")");
  CK_CHECK(dh >= 1 && dw >= 1, op, "dilation must be >= 1, got (", dh, ", ", dw, ")");
  CK_CHECK(ph >= 0 && pw >= 0, op, "padding must be >= 0, got (", ph, ", ", pw, ")");
  CK_CHECK(ph <= kh / 2 && pw <= kw / 2, op, "padding must be at most half the kernel size, got padding (", ph, ", ",
           pw, ") for kernel (", kh, ", ", kw, ")");
  mul_checked(op, mul_checked(op, mul_checked(op, xs[0], xs[1]), xs[2]), xs[3]);
  CK_CHECK(kh < (int64_t(1) << 31) && kw < (int64_t(1) << 31) && dh < (int64_t(1) << 31) && dw < (int64_t(1) << 31), op,
           "kernel_size and dilation must be < 2^31");
  MaxPool2dParams p{};
  // clang-format off: one line per group of fields
  p.N = xs[0]; p.C = xs[1]; p.H = xs[2]; p.W = xs[3];
  p.kernel_h = kh; p.kernel_w = kw; p.stride_h = sh; p.stride_w = sw;
  p.pad_h = ph; p.pad_w = pw; p.dil_h = dh; p.dil_w = dw; p.ceil_mode = ceil_mode;
  // clang-format on
  p.P = pool_output_size(op, "height", p.H, kh, sh, ph, dh, ceil_mode);
  p.Q = pool_output_size(op, "width", p.W, kw, sw, pw, dw, ceil_mode);
  check_windows_touch_input(op, "height", p.H, kh, sh, ph, dh, p.P);
  check_windows_touch_input(op, "width", p.W, kw, sw, pw, dw, p.Q);
  return p;
}

namespace {

// Candidate v at flat index i replaces the running max when it is larger or NaN (torch's rule).
template <typename T>
inline void take(T v, int64_t i, T& m, int64_t& mi) {
  const bool better = (v > m) || std::isnan(v);
  m = better ? v : m;
  mi = better ? i : mi;
}

#if defined(__AVX2__)
// 8 outputs of one row of a 2x2/2 float32 pool. The four candidates are taken in row-major window order
// with the same rule as take(), so values and indices equal the scalar path's bit for bit.
inline __m256 deinterleave(__m256 a, __m256 b, bool odd) {
  const __m256 s =
      odd ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)) : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

inline void take8(__m256 c, int k, __m256& m, __m256i& sel) {
  const __m256 better = _mm256_or_ps(_mm256_cmp_ps(c, m, _CMP_GT_OQ), _mm256_cmp_ps(c, c, _CMP_UNORD_Q));
  m = _mm256_blendv_ps(m, c, better);
  sel = _mm256_castps_si256(
      _mm256_blendv_ps(_mm256_castsi256_ps(sel), _mm256_castsi256_ps(_mm256_set1_epi32(k)), better));
}

// Returns the first output column not done.
int64_t pool_row_2x2_avx2(const float* r0, const float* r1, int64_t Q, int64_t W, int64_t base, float* yr,
                          int64_t* ir) {
  const __m256i two_q = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i w_row = _mm256_set1_epi32(static_cast<int>(W));
  int64_t oq = 0;
  for (; oq + 8 <= Q; oq += 8) {
    const __m256 a0 = _mm256_loadu_ps(r0 + 2 * oq), a1 = _mm256_loadu_ps(r0 + 2 * oq + 8);
    const __m256 b0 = _mm256_loadu_ps(r1 + 2 * oq), b1 = _mm256_loadu_ps(r1 + 2 * oq + 8);
    __m256 m = deinterleave(a0, a1, false);
    __m256i sel = _mm256_setzero_si256();
    take8(deinterleave(a0, a1, true), 1, m, sel);
    take8(deinterleave(b0, b1, false), 2, m, sel);
    take8(deinterleave(b0, b1, true), 3, m, sel);
    _mm256_storeu_ps(yr + oq, m);
    // offset within the window: sel 0 -> 0, 1 -> 1, 2 -> W, 3 -> W + 1, i.e. (sel & 1) + (sel >> 1) * W
    const __m256i win = _mm256_add_epi32(_mm256_and_si256(sel, _mm256_set1_epi32(1)),
                                         _mm256_mullo_epi32(_mm256_srli_epi32(sel, 1), w_row));
    const __m256i local = _mm256_add_epi32(_mm256_add_epi32(two_q, _mm256_set1_epi32(static_cast<int>(2 * oq))), win);
    const __m256i vbase = _mm256_set1_epi64x(base);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ir + oq),
                        _mm256_add_epi64(vbase, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(local))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ir + oq + 4),
                        _mm256_add_epi64(vbase, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(local, 1))));
  }
  return oq;
}
#endif

template <typename T>
void pool_plane_2x2(const MaxPool2dParams& p, const T* x, T* y, int64_t* ind) {
  for (int64_t op = 0; op < p.P; ++op) {
    const T* r0 = x + (2 * op) * p.W;
    const T* r1 = r0 + p.W;
    T* yr = y + op * p.Q;
    int64_t* ir = ind + op * p.Q;
    const int64_t base = 2 * op * p.W;
    int64_t oq0 = 0;
#if defined(__AVX2__)
    // Window offsets are computed in int32: fine while 2*Q + W < 2^31, which the caller checks.
    if constexpr (std::is_same_v<T, float>) oq0 = pool_row_2x2_avx2(r0, r1, p.Q, p.W, base, yr, ir);
#endif
    for (int64_t oq = oq0; oq < p.Q; ++oq) {
      const int64_t i0 = base + 2 * oq;
      T m = r0[2 * oq];
      int64_t mi = i0;
      take(r0[2 * oq + 1], i0 + 1, m, mi);
      take(r1[2 * oq], i0 + p.W, m, mi);
      take(r1[2 * oq + 1], i0 + p.W + 1, m, mi);
      yr[oq] = m;
      ir[oq] = mi;
    }
  }
}

template <typename T>
void pool_plane_general(const MaxPool2dParams& p, const T* x, T* y, int64_t* ind) {
  for (int64_t op = 0; op < p.P; ++op) {
    int64_t ih0 = op * p.stride_h - p.pad_h;
    const int64_t ih1 = std::min(ih0 + (p.kernel_h - 1) * p.dil_h + 1, p.H);
    while (ih0 < 0) ih0 += p.dil_h;
    for (int64_t oq = 0; oq < p.Q; ++oq) {
      int64_t iw0 = oq * p.stride_w - p.pad_w;
      const int64_t iw1 = std::min(iw0 + (p.kernel_w - 1) * p.dil_w + 1, p.W);
      while (iw0 < 0) iw0 += p.dil_w;
      T m = -std::numeric_limits<T>::infinity();
      int64_t mi = ih0 * p.W + iw0;
      for (int64_t ih = ih0; ih < ih1; ih += p.dil_h)
        for (int64_t iw = iw0; iw < iw1; iw += p.dil_w) take(x[ih * p.W + iw], ih * p.W + iw, m, mi);
      y[op * p.Q + oq] = m;
      ind[op * p.Q + oq] = mi;
    }
  }
}

}  // namespace

template <typename T>
void maxpool2d_fwd_cpu(const MaxPool2dParams& p, const T* x, T* y, int64_t* indices) {
  const int64_t planes = p.N * p.C, HW = p.H * p.W, PQ = p.P * p.Q;
  const bool fast = p.kernel_h == 2 && p.kernel_w == 2 && p.stride_h == 2 && p.stride_w == 2 && p.pad_h == 0 &&
                    p.pad_w == 0 && p.dil_h == 1 && p.dil_w == 1 && 2 * p.P <= p.H && 2 * p.Q <= p.W &&
                    p.W < (int64_t(1) << 29);
#pragma omp parallel for num_threads(num_threads()) schedule(static) if (planes * HW >= kGrainElements)
  for (int64_t pl = 0; pl < planes; ++pl) {
    if (fast)
      pool_plane_2x2(p, x + pl * HW, y + pl * PQ, indices + pl * PQ);
    else
      pool_plane_general(p, x + pl * HW, y + pl * PQ, indices + pl * PQ);
  }
}

template <typename T>
void maxpool2d_bwd_cpu(int64_t planes, int64_t HW, int64_t PQ, const T* dy, const int64_t* indices, T* dx) {
  ErrorSlot err;
#pragma omp parallel for num_threads(num_threads()) schedule(static) if (planes * HW >= kGrainElements)
  for (int64_t pl = 0; pl < planes; ++pl) {
    T* d = dx + pl * HW;
    std::memset(d, 0, sizeof(T) * HW);
    const T* g = dy + pl * PQ;
    const int64_t* ix = indices + pl * PQ;
    for (int64_t o = 0; o < PQ; ++o) {
      const int64_t i = ix[o];
      if (i < 0 || i >= HW) {
        err.capture("maxpool2d_bwd: indices must lie in [0, H*W) = [0, " + std::to_string(HW) + "), got " +
                    std::to_string(i) + " at plane " + std::to_string(pl) + ", position " + std::to_string(o));
        break;
      }
      d[i] += g[o];
    }
  }
  err.rethrow();
}

#define CK_INSTANTIATE(T)                                                             \
  template void maxpool2d_fwd_cpu<T>(const MaxPool2dParams&, const T*, T*, int64_t*); \
  template void maxpool2d_bwd_cpu<T>(int64_t, int64_t, int64_t, const T*, const int64_t*, T*);
CK_INSTANTIATE(float)
CK_INSTANTIATE(double)
#undef CK_INSTANTIATE

}  // namespace ck
