// CPU max-pooling with argmax. One OpenMP task per (n, c) plane block. The common 2x2 stride-2 unpadded
// case has its own loop written as selects, so the compiler vectorizes it; the general loop follows
// torch's cpu_max_pool window walk exactly, so indices and NaN handling match PyTorch.
#include "ops/maxpool2d.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "common/check.h"

namespace ck {

int64_t pool_output_size(const char* op, const char* dim, int64_t in, int64_t k, int64_t s, int64_t pad,
                         int64_t d, bool ceil_mode) {
  const int64_t eff = d * (k - 1) + 1;
  const int64_t span = in + 2 * pad;
  CK_CHECK(eff <= span, op, "kernel ", dim, " with dilation (", eff, ") is larger than the padded input (", span,
           ")");
  int64_t out = (span - eff + (ceil_mode ? s - 1 : 0)) / s + 1;
  if (ceil_mode && (out - 1) * s >= in + pad) --out;
  CK_CHECK(out >= 1, op, "output ", dim, " would be ", out, "; it must be >= 1");
  return out;
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
  CK_CHECK(ph <= kh / 2 && pw <= kw / 2, op, "padding must be at most half the kernel size, got padding (", ph,
           ", ", pw, ") for kernel (", kh, ", ", kw, ")");
  mul_checked(op, mul_checked(op, mul_checked(op, xs[0], xs[1]), xs[2]), xs[3]);
  CK_CHECK(kh < (int64_t(1) << 31) && kw < (int64_t(1) << 31) && dh < (int64_t(1) << 31) &&
               dw < (int64_t(1) << 31),
           op, "kernel_size and dilation must be < 2^31");
  MaxPool2dParams p{};
  p.N = xs[0]; p.C = xs[1]; p.H = xs[2]; p.W = xs[3];
  p.kernel_h = kh; p.kernel_w = kw; p.stride_h = sh; p.stride_w = sw;
  p.pad_h = ph; p.pad_w = pw; p.dil_h = dh; p.dil_w = dw; p.ceil_mode = ceil_mode;
  p.P = pool_output_size(op, "height", p.H, kh, sh, ph, dh, ceil_mode);
  p.Q = pool_output_size(op, "width", p.W, kw, sw, pw, dw, ceil_mode);
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

template <typename T>
void pool_plane_2x2(const MaxPool2dParams& p, const T* x, T* y, int64_t* ind) {
  for (int64_t op = 0; op < p.P; ++op) {
    const T* r0 = x + (2 * op) * p.W;
    const T* r1 = r0 + p.W;
    T* yr = y + op * p.Q;
    int64_t* ir = ind + op * p.Q;
    const int64_t base = 2 * op * p.W;
#pragma omp simd
    for (int64_t oq = 0; oq < p.Q; ++oq) {
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
                    p.pad_w == 0 && p.dil_h == 1 && p.dil_w == 1 && 2 * p.P <= p.H && 2 * p.Q <= p.W;
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
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

#define CK_INSTANTIATE(T)                                                               \
  template void maxpool2d_fwd_cpu<T>(const MaxPool2dParams&, const T*, T*, int64_t*);   \
  template void maxpool2d_bwd_cpu<T>(int64_t, int64_t, int64_t, const T*, const int64_t*, T*);
CK_INSTANTIATE(float)
CK_INSTANTIATE(double)
#undef CK_INSTANTIATE

}  // namespace ck
