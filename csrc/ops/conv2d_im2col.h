// conv2d's column matrix (im2col, Chellapilla et al. 2006): built whole for one work item (float64), or
// handed to the GEMM one row at a time (float32: Im2colRows for the forward's B and backward-weight's B^T,
// Im2colPixels for backward-weight's B in pixel-major order), and its scatter-add back (col2im).
#pragma once
#include <algorithm>
#include <cstring>

#include "gemm/gemm.h"
#include "ops/conv2d.h"

namespace ck::conv_detail {

// For kernel column s: the output columns q whose input column q*stride + s*dil - pad lies in [0, W).
inline void valid_q_range(const Conv2dParams& p, int64_t s, int64_t* q_lo, int64_t* q_hi) {
  const int64_t iw0 = s * p.dil_w - p.pad_w;
  const int64_t lo = iw0 >= 0 ? 0 : (-iw0 + p.stride_w - 1) / p.stride_w;
  const int64_t hi = p.W - iw0 <= 0 ? 0 : (p.W - iw0 + p.stride_w - 1) / p.stride_w;
  *q_lo = std::min(lo, p.Q);
  *q_hi = std::clamp(hi, *q_lo, p.Q);
}

// x (Cg, H, W) -> col (Cg*R*S rows of stride ld) for output rows [p0, p1), written from column 0.
// Writes (=).
template <typename T>
void im2col_rows(const Conv2dParams& p, const T* x, int64_t p0, int64_t p1, T* col, int64_t ld) {
  const int64_t HW = p.H * p.W;
  for (int64_t c = 0; c < p.Cg(); ++c) {
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t s = 0; s < p.S; ++s) {
        T* row = col + ((c * p.R + r) * p.S + s) * ld;
        int64_t q_lo, q_hi;
        valid_q_range(p, s, &q_lo, &q_hi);
        const int64_t iw0 = s * p.dil_w - p.pad_w;
        for (int64_t pp = p0; pp < p1; ++pp) {
          T* dst = row + (pp - p0) * p.Q;
          const int64_t ih = pp * p.stride_h - p.pad_h + r * p.dil_h;
          if (ih < 0 || ih >= p.H) {
            std::memset(dst, 0, sizeof(T) * p.Q);
            continue;
          }
          const T* src = x + c * HW + ih * p.W;
          std::fill(dst, dst + q_lo, T(0));
          if (p.stride_w == 1) {
            std::memcpy(dst + q_lo, src + q_lo + iw0, sizeof(T) * (q_hi - q_lo));
          } else {
            for (int64_t q = q_lo; q < q_hi; ++q) dst[q] = src[q * p.stride_w + iw0];
          }
          std::fill(dst + q_hi, dst + p.Q, T(0));
        }
      }
    }
  }
}

// col (Cg*R*S rows of stride ld) for output rows [p0, p1) -> dx (Cg, H, W). Accumulates (+=).
template <typename T>
void col2im_rows(const Conv2dParams& p, const T* col, int64_t ld, int64_t p0, int64_t p1, T* dx) {
  const int64_t HW = p.H * p.W;
  for (int64_t c = 0; c < p.Cg(); ++c) {
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t s = 0; s < p.S; ++s) {
        const T* row = col + ((c * p.R + r) * p.S + s) * ld;
        int64_t q_lo, q_hi;
        valid_q_range(p, s, &q_lo, &q_hi);
        const int64_t iw0 = s * p.dil_w - p.pad_w;
        for (int64_t pp = p0; pp < p1; ++pp) {
          const int64_t ih = pp * p.stride_h - p.pad_h + r * p.dil_h;
          if (ih < 0 || ih >= p.H) continue;
          const T* src = row + (pp - p0) * p.Q;
          T* dst = dx + c * HW + ih * p.W;
          if (p.stride_w == 1) {
            T* d = dst + iw0;
            for (int64_t q = q_lo; q < q_hi; ++q) d[q] += src[q];
          } else {
            for (int64_t q = q_lo; q < q_hi; ++q) dst[q * p.stride_w + iw0] += src[q];
          }
        }
      }
    }
  }
}

// The column matrix of one work item (samples [n0, n0 + nb) of group g, output rows [p0, p1)) as a GEMM
// operand that is never stored: row (c, r, s), column j = pixel j % cols of sample n0 + j / cols. The GEMM
// packs its panels from here, straight from x (implicit im2col).
class Im2colRows final : public RowGenerator {
 public:
  Im2colRows(const Conv2dParams& p, const float* x, int64_t n0, int64_t g, int64_t p0, int64_t p1)
      : p_(p), xg_(x + (n0 * p.C + g * p.Cg()) * p.H * p.W), p0_(p0), cols_((p1 - p0) * p.Q) {}

  void row(int64_t i, int64_t j0, int64_t len, float* out) const override {
    const Conv2dParams& p = p_;
    const int64_t c = i / (p.R * p.S), r = (i / p.S) % p.R, s = i % p.S;
    int64_t q_lo, q_hi;
    valid_q_range(p, s, &q_lo, &q_hi);
    const int64_t iw0 = s * p.dil_w - p.pad_w;
    for (int64_t j = j0, end = j0 + len; j < end;) {
      const int64_t jn = j / cols_, local = j % cols_, pp = p0_ + local / p.Q, q = local % p.Q;
      const int64_t q_end = std::min(p.Q, q + (end - j));  // the rest of this output row, within the request
      float* o = out + (j - j0) - q;                       // o[q'] is output column q' of this row
      const int64_t ih = pp * p.stride_h - p.pad_h + r * p.dil_h;
      if (ih < 0 || ih >= p.H) {
        std::fill(o + q, o + q_end, 0.0f);
      } else {
        const float* src = xg_ + (jn * p.C + c) * p.H * p.W + ih * p.W + iw0;
        const int64_t a = std::clamp(q_lo, q, q_end), b = std::clamp(q_hi, a, q_end);
        std::fill(o + q, o + a, 0.0f);
        if (p.stride_w == 1)
          std::memcpy(o + a, src + a, sizeof(float) * size_t(b - a));
        else
          for (int64_t t = a; t < b; ++t) o[t] = src[t * p.stride_w];
        std::fill(o + b, o + q_end, 0.0f);
      }
      j += q_end - q;
    }
  }

 private:
  const Conv2dParams& p_;
  const float* xg_;
  int64_t p0_, cols_;
};

// The transpose of a work item's column matrix as a GEMM operand: row i is output pixel i of the item
// (pixel i % cols of sample n0 + i / cols), column t = (c, r, s). Generated row by row, a row is C*R runs of
// S input values (contiguous in x when the dilation is 1), so backward-weight packs B = col^T with whole-run
// copies instead of a transposing gather; it pays off for wide kernels (AlexNet's 11x11 stride 4).
class Im2colPixels final : public RowGenerator {
 public:
  Im2colPixels(const Conv2dParams& p, const float* x, int64_t n0, int64_t g, int64_t p0, int64_t p1)
      : p_(p), xg_(x + (n0 * p.C + g * p.Cg()) * p.H * p.W), p0_(p0), cols_((p1 - p0) * p.Q) {}

  void row(int64_t i, int64_t t0, int64_t len, float* out) const override {
    const Conv2dParams& p = p_;
    const int64_t jn = i / cols_, local = i % cols_, pp = p0_ + local / p.Q, q = local % p.Q;
    const int64_t ih0 = pp * p.stride_h - p.pad_h, iw0 = q * p.stride_w - p.pad_w;
    const float* xs = xg_ + jn * p.C * p.H * p.W;
    for (int64_t t = t0, end = t0 + len; t < end;) {
      const int64_t c = t / (p.R * p.S), r = (t / p.S) % p.R, s = t % p.S;
      const int64_t s_end = std::min(p.S, s + (end - t));
      float* o = out + (t - t0) - s;  // o[s'] is kernel column s' of this (c, r)
      const int64_t ih = ih0 + r * p.dil_h;
      if (ih < 0 || ih >= p.H) {
        std::fill(o + s, o + s_end, 0.0f);
      } else {
        const float* src = xs + (c * p.H + ih) * p.W;
        for (int64_t k = s; k < s_end; ++k) {
          const int64_t iw = iw0 + k * p.dil_w;
          o[k] = iw >= 0 && iw < p.W ? src[iw] : 0.0f;
        }
      }
      t += s_end - s;
    }
  }

 private:
  const Conv2dParams& p_;
  const float* xg_;
  int64_t p0_, cols_;
};

}  // namespace ck::conv_detail
