// CPU convolution as im2col + GEMM (Chellapilla et al. 2006; Caffe's conv layer), tiled so that the
// column buffer of one tile stays in L2. Parallel strategy: OpenMP over (sample, group, row-tile) work
// items, each calling a single-threaded sgemm; no BLAS threads exist to contend with ours. A 1x1,
// stride-1, unpadded conv skips im2col: x itself is the column matrix.
#include "ops/conv2d.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/check.h"
#include "common/runtime.h"
#include "common/scratch.h"
#include "gemm/gemm.h"
#include "ops/conv2d_im2col.h"

namespace ck {

Conv2dParams make_conv2d_params(const char* op, const std::vector<int64_t>& xs, const std::vector<int64_t>& ws,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                                int64_t groups) {
  CK_CHECK(xs.size() == 4, op, "x must be 4-D (N, C, H, W), got shape ", shape_str(xs));
  CK_CHECK(ws.size() == 4, op, "w must be 4-D (K, C/groups, R, S), got shape ", shape_str(ws));
  for (int64_t d : xs) CK_CHECK(d >= 0, op, "x shape must be non-negative, got ", shape_str(xs));
  for (int64_t d : ws) CK_CHECK(d >= 0, op, "w shape must be non-negative, got ", shape_str(ws));
  CK_CHECK(sh >= 1 && sw >= 1, op, "stride must be >= 1, got (", sh, ", ", sw, ")");
  CK_CHECK(dh >= 1 && dw >= 1, op, "dilation must be >= 1, got (", dh, ", ", dw, ")");
  CK_CHECK(ph >= 0 && pw >= 0, op, "padding must be >= 0, got (", ph, ", ", pw, ")");
  CK_CHECK(groups >= 1, op, "groups must be >= 1, got ", groups);
  Conv2dParams p{};
  // clang-format off: one line per group of fields
  p.N = xs[0]; p.C = xs[1]; p.H = xs[2]; p.W = xs[3];
  p.K = ws[0]; p.R = ws[2]; p.S = ws[3];
  p.stride_h = sh; p.stride_w = sw; p.pad_h = ph; p.pad_w = pw; p.dil_h = dh; p.dil_w = dw; p.groups = groups;
  // clang-format on
  CK_CHECK(p.C >= 1 && p.H >= 1 && p.W >= 1, op, "x must have C, H, W >= 1, got shape ", shape_str(xs));
  CK_CHECK(p.K >= 1 && p.R >= 1 && p.S >= 1, op, "w must have K, R, S >= 1, got shape ", shape_str(ws));
  CK_CHECK(p.C % groups == 0, op, "in-channels C=", p.C, " must be divisible by groups=", groups);
  CK_CHECK(p.K % groups == 0, op, "out-channels K=", p.K, " must be divisible by groups=", groups);
  CK_CHECK(ws[1] == p.C / groups, op, "w.shape[1] must be C/groups = ", p.C / groups, ", got ", ws[1], " (x shape ",
           shape_str(xs), ", w shape ", shape_str(ws), ", groups ", groups, ")");
  const int64_t eff_r = add_checked(op, mul_checked(op, dh, p.R - 1), 1);
  const int64_t eff_s = add_checked(op, mul_checked(op, dw, p.S - 1), 1);
  const int64_t span_h = add_checked(op, p.H, mul_checked(op, 2, ph));
  const int64_t span_w = add_checked(op, p.W, mul_checked(op, 2, pw));
  CK_CHECK(eff_r <= span_h && eff_s <= span_w, op, "kernel (", eff_r, ", ", eff_s,
           ") with dilation is larger than the padded input (", span_h, ", ", span_w, ")");
  p.P = (span_h - eff_r) / sh + 1;
  p.Q = (span_w - eff_s) / sw + 1;
  // Every tensor's element count must fit int64; the GEMM dimensions must fit the 32-bit BLAS.
  mul_checked(op, mul_checked(op, mul_checked(op, p.N, p.K), p.P), p.Q);
  mul_checked(op, mul_checked(op, mul_checked(op, p.N, p.C), p.H), p.W);
  const int64_t crs = mul_checked(op, mul_checked(op, p.Cg(), p.R), p.S);
  CK_CHECK(crs < (int64_t(1) << 31) && p.P * p.Q < (int64_t(1) << 31) && p.H * p.W < (int64_t(1) << 31), op,
           "a plane or filter of this size does not fit the 32-bit BLAS interface");
  return p;
}

namespace {

using namespace conv_detail;

// Whether a pass of this convolution is big enough to be worth a parallel region (see kGrainFlops).
bool worth_threads(const Conv2dParams& p) {
  return 2.0 * double(p.N) * double(p.K) * double(p.P * p.Q) * double(p.Cg() * p.R * p.S) >= kGrainFlops;
}

bool is_pointwise(const Conv2dParams& p) {
  return p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

// How the output is cut into GEMM work items. A large plane is cut into tiles of whole output rows; a
// small plane is not cut, and several samples are stacked side by side in one column matrix instead, so
// that every GEMM has a wide enough n dimension (thin GEMMs ran at half of sgemm peak). The column
// buffer (Cg*R*S x cols) is sized to stay near L2.
struct Tiling {
  int64_t rows;     // output rows per tile
  int64_t ntiles;   // tiles per sample
  int64_t nb;       // samples per block (> 1 only when rows == P)
  int64_t nblocks;  // ceil(N / nb)
  int64_t cols;     // widest column count of one work item: nb * rows * Q
};

template <typename T>
Tiling make_tiling(const Conv2dParams& p, int nthreads) {
  const int64_t crs = p.Cg() * p.R * p.S, PQ = p.P * p.Q;
  const int64_t target = std::clamp<int64_t>((512 * 1024) / (crs * int64_t(sizeof(T))), 512, 4096);
  Tiling t{};
  if (PQ >= target || p.N <= 1) {
    t.rows = std::clamp<int64_t>(target / p.Q, 1, p.P);
    t.nb = 1;
  } else {
    t.rows = p.P;
    // Stack samples, but keep at least two blocks per thread so the static schedule stays balanced.
    const int64_t by_size = std::max<int64_t>(1, target / PQ);
    const int64_t by_balance = std::max<int64_t>(1, (p.N * p.groups) / (2 * int64_t(nthreads)));
    t.nb = std::min({by_size, by_balance, p.N});
  }
  t.ntiles = (p.P + t.rows - 1) / t.rows;
  t.nblocks = (p.N + t.nb - 1) / t.nb;
  t.cols = t.nb * t.rows * p.Q;
  return t;
}

// Copies `rows` rows of `width` elements from src (row stride src_ld) to dst (row stride dst_ld).
template <typename T>
inline void copy_rows(int64_t rows, int64_t width, const T* src, int64_t src_ld, T* dst, int64_t dst_ld) {
  for (int64_t i = 0; i < rows; ++i) std::memcpy(dst + i * dst_ld, src + i * src_ld, sizeof(T) * width);
}

// The column matrix of one work item: samples [n0, n0+nb) of group g, output rows [p0, p1), laid side by
// side. Returns a pointer to it and its row stride; a pointwise conv of one sample needs no copy at all.
template <typename T>
const T* gather_cols(const Conv2dParams& p, const T* x, int64_t n0, int64_t nb, int64_t g, int64_t p0, int64_t p1,
                     bool direct, T* col, int64_t* ld) {
  const int64_t HW = p.H * p.W, cols = (p1 - p0) * p.Q;
  if (direct && nb == 1) {
    *ld = HW;
    return x + (n0 * p.C + g * p.Cg()) * HW + p0 * p.Q;
  }
  *ld = nb * cols;
  for (int64_t j = 0; j < nb; ++j) {
    const T* xg = x + ((n0 + j) * p.C + g * p.Cg()) * HW;
    if (direct)
      copy_rows(p.Cg(), cols, xg + p0 * p.Q, HW, col + j * cols, *ld);
    else
      im2col_rows(p, xg, p0, p1, col + j * cols, *ld);
  }
  return col;
}

// op(A) of each group's GEMMs packed once (float32): group g's A starts at a + g * group_stride. Empty when
// the GEMMs are too few to share the packing (one per group), and for float64 (which packs per call).
template <typename T>
std::vector<PackedA> packed_weights(int64_t groups, int64_t gemms, bool trans, int64_t m, int64_t k, const T* a,
                                    int64_t lda, int64_t group_stride) {
  std::vector<PackedA> out;
  if constexpr (std::is_same_v<T, float>) {
    if (gemms > groups) {
      out.reserve(size_t(groups));
      for (int64_t g = 0; g < groups; ++g) out.emplace_back(trans, m, k, a + g * group_stride, lda);
    }
  }
  return out;
}

inline const PackedA* packed_at(const std::vector<PackedA>& wp, int64_t g) {
  return wp.empty() ? nullptr : &wp[size_t(g)];
}

// The weights of the forward convolution whose output is conv2d_bwd_data's dx: per group, K and C swapped
// and each filter rotated by 180 degrees. w (K, Cg, R, S) -> wt (C, Kg, R, S).
template <typename T>
std::vector<T> flipped_transposed(const Conv2dParams& p, const T* w) {
  const int64_t Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S;
  std::vector<T> wt(size_t(p.K * Cg * RS));
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t c = 0; c < Cg; ++c) {
        const T* src = w + ((g * Kg + k) * Cg + c) * RS;
        T* dst = wt.data() + ((g * Cg + c) * Kg + k) * RS;
        for (int64_t t = 0; t < RS; ++t) dst[RS - 1 - t] = src[t];
      }
  return wt;
}

// The (Kg, nb * cols) matrix of dy for the work item whose first sample's rows start at dy0: dy itself
// (row stride P*Q) for one sample, else the samples' rows copied side by side into buf.
template <typename T>
const T* gather_dy(const Conv2dParams& p, const T* dy0, int64_t nb, int64_t cols, T* buf, int64_t* ld) {
  const int64_t PQ = p.P * p.Q;
  if (nb == 1) {
    *ld = PQ;
    return dy0;
  }
  for (int64_t j = 0; j < nb; ++j) copy_rows(p.Kg(), cols, dy0 + j * p.K * PQ, PQ, buf + j * cols, nb * cols);
  *ld = nb * cols;
  return buf;
}

}  // namespace

template <typename T>
void conv2d_fwd_cpu(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y, bool relu) {
  const int64_t Cg = p.Cg(), Kg = p.Kg(), crs = Cg * p.R * p.S, PQ = p.P * p.Q;
  const bool direct = is_pointwise(p);
  if (p.N == 0) return;
  const int nthreads = num_threads();
  const Tiling tl = make_tiling<T>(p, nthreads);
  const int64_t items = tl.nblocks * p.groups * tl.ntiles;
  // float32 packs the GEMM's panels straight from x (Im2colRows); float64 builds each item's column matrix.
  Scratch<T> col_s(nthreads, std::is_same_v<T, float> ? 0 : size_t(crs * tl.cols));
  Scratch<T> out_s(nthreads, tl.nb > 1 ? size_t(Kg * tl.cols) : 0);
  // Each group's weights are the A of every work item's GEMM: packed once here, not once per item.
  const std::vector<PackedA> wp = packed_weights<T>(p.groups, items, false, Kg, crs, w, crs, Kg * crs);
#pragma omp parallel num_threads(nthreads) if (worth_threads(p))
  {
    T* col = col_s.mine();
    T* out = out_s.mine();
#pragma omp for schedule(dynamic, 1)  // items write disjoint outputs: any order gives the same bits
    for (int64_t it = 0; it < items; ++it) {
      const int64_t blk = it / (p.groups * tl.ntiles), g = (it / tl.ntiles) % p.groups, t = it % tl.ntiles;
      const int64_t n0 = blk * tl.nb, nb = std::min(tl.nb, p.N - n0);
      const int64_t p0 = t * tl.rows, p1 = std::min(p.P, p0 + tl.rows), cols = (p1 - p0) * p.Q;
      T* y0 = y + (n0 * p.K + g * Kg) * PQ + p0 * p.Q;
      T* dst = nb == 1 ? y0 : out;
      const int64_t ldd = nb == 1 ? PQ : nb * cols;
      if constexpr (std::is_same_v<T, float>) {
        if (!(direct && nb == 1)) {
          sgemm_generated_b(false, false, Kg, nb * cols, crs, 1.0f, w + g * Kg * crs, crs,
                            Im2colRows(p, x, n0, g, p0, p1), 0.0f, dst, ldd, packed_at(wp, g));
        } else {
          sgemm(false, false, Kg, cols, crs, T(1), w + g * Kg * crs, crs,
                x + (n0 * p.C + g * Cg) * p.H * p.W + p0 * p.Q, p.H * p.W, T(0), dst, ldd, packed_at(wp, g));
        }
      } else {
        int64_t ldb;
        const T* bmat = gather_cols(p, x, n0, nb, g, p0, p1, direct, col, &ldb);
        gemm(false, false, Kg, nb * cols, crs, T(1), w + g * Kg * crs, crs, bmat, ldb, T(0), dst, ldd);
      }
      if (nb > 1)
        for (int64_t j = 0; j < nb; ++j) copy_rows(Kg, cols, out + j * cols, nb * cols, y0 + j * p.K * PQ, PQ);
      // Epilogue on the item's output while it is still in cache: + bias, then ReLU (relu_fwd's formula,
      // so a fused Conv2d + ReLU gives the unfused bits).
      if (b || relu) {
        for (int64_t j = 0; j < nb; ++j) {
          for (int64_t k = 0; k < Kg; ++k) {
            const T bk = b ? b[g * Kg + k] : T(0);
            T* yr = y0 + j * p.K * PQ + k * PQ;
            if (b && relu) {
              for (int64_t i = 0; i < cols; ++i) {
                const T v = yr[i] + bk;
                yr[i] = v < T(0) ? T(0) : v;
              }
            } else if (b) {
              for (int64_t i = 0; i < cols; ++i) yr[i] += bk;
            } else {
              for (int64_t i = 0; i < cols; ++i) yr[i] = yr[i] < T(0) ? T(0) : yr[i];
            }
          }
        }
      }
    }
  }
}

template <typename T>
void conv2d_bwd_data_cpu(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  const int64_t Cg = p.Cg(), Kg = p.Kg(), crs = Cg * p.R * p.S, PQ = p.P * p.Q, HW = p.H * p.W;
  const bool direct = is_pointwise(p);
  if (p.N == 0) return;
  // Stride 1: dx is the forward convolution of dy with the flipped, transposed filters and padding
  // dil * (R - 1) - pad, which needs no column matrix and no scatter-add (col2im). Its GEMM has C/groups
  // rows, so few input channels (an RGB first layer) would leave the micro-kernel's rows mostly empty.
  if (!direct && p.Cg() >= 16 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h <= p.dil_h * (p.R - 1) &&
      p.pad_w <= p.dil_w * (p.S - 1)) {
    Conv2dParams t = p;
    t.C = p.K, t.H = p.P, t.W = p.Q, t.K = p.C, t.P = p.H, t.Q = p.W;
    t.pad_h = p.dil_h * (p.R - 1) - p.pad_h, t.pad_w = p.dil_w * (p.S - 1) - p.pad_w;
    const std::vector<T> wt = flipped_transposed(p, w);
    conv2d_fwd_cpu(t, dy, wt.data(), static_cast<const T*>(nullptr), dx);
    return;
  }
  const int nthreads = num_threads();
  const Tiling tl = make_tiling<T>(p, nthreads);
  // Tiles of one sample overlap in dx (col2im), so a work item owns whole samples: (block, group).
  const int64_t items = tl.nblocks * p.groups;
  Scratch<T> col_s(nthreads, direct ? 0 : size_t(crs * tl.cols));
  Scratch<T> dyb_s(nthreads, tl.nb > 1 ? size_t(Kg * tl.cols) : 0);
  Scratch<T> dxb_s(nthreads, direct && tl.nb > 1 ? size_t(Cg * tl.cols) : 0);
  const std::vector<PackedA> wp =
      packed_weights<T>(p.groups, items * tl.ntiles, true, direct ? Cg : crs, Kg, w, direct ? Cg : crs, Kg * crs);
#pragma omp parallel num_threads(nthreads) if (worth_threads(p))
  {
    T* col = col_s.mine();
    T* dyb = dyb_s.mine();
    T* dxb = dxb_s.mine();
#pragma omp for schedule(dynamic, 1)  // items write disjoint outputs: any order gives the same bits
    for (int64_t it = 0; it < items; ++it) {
      const int64_t blk = it / p.groups, g = it % p.groups;
      const int64_t n0 = blk * tl.nb, nb = std::min(tl.nb, p.N - n0);
      const T* wg = w + g * Kg * crs;
      for (int64_t j = 0; j < nb && !direct; ++j)
        std::memset(dx + ((n0 + j) * p.C + g * Cg) * HW, 0, sizeof(T) * Cg * HW);
      for (int64_t t = 0; t < tl.ntiles; ++t) {
        const int64_t p0 = t * tl.rows, p1 = std::min(p.P, p0 + tl.rows), cols = (p1 - p0) * p.Q;
        int64_t ldb;
        const T* bmat = gather_dy(p, dy + (n0 * p.K + g * Kg) * PQ + p0 * p.Q, nb, cols, dyb, &ldb);
        if (direct) {
          T* dx0 = dx + (n0 * p.C + g * Cg) * HW + p0 * p.Q;
          if (nb == 1) {
            gemm(true, false, Cg, cols, Kg, T(1), wg, Cg, bmat, ldb, T(0), dx0, HW, packed_at(wp, g));
          } else {
            gemm(true, false, Cg, nb * cols, Kg, T(1), wg, Cg, bmat, ldb, T(0), dxb, nb * cols, packed_at(wp, g));
            for (int64_t j = 0; j < nb; ++j) copy_rows(Cg, cols, dxb + j * cols, nb * cols, dx0 + j * p.C * HW, HW);
          }
          continue;
        }
        gemm(true, false, crs, nb * cols, Kg, T(1), wg, crs, bmat, ldb, T(0), col, nb * cols, packed_at(wp, g));
        for (int64_t j = 0; j < nb; ++j)
          col2im_rows(p, col + j * cols, nb * cols, p0, p1, dx + ((n0 + j) * p.C + g * Cg) * HW);
      }
    }
  }
}

template <typename T>
void conv2d_bwd_weight_cpu(const Conv2dParams& p, const T* dy, const T* x, T* dw, bool accumulate) {
  const int64_t Cg = p.Cg(), Kg = p.Kg(), crs = Cg * p.R * p.S, PQ = p.P * p.Q;
  const int64_t wsize = p.K * crs;
  const bool direct = is_pointwise(p);
  const int nthreads = num_threads();
  if (p.N == 0) {
    if (!accumulate) std::fill(dw, dw + wsize, T(0));
    return;
  }
  const Tiling tl = make_tiling<T>(p, nthreads);
  const int64_t items = tl.nblocks * p.groups * tl.ntiles;
  // Each thread sums into its own dw; the partial sums are added in thread order afterwards, so the
  // result is deterministic for a given thread count.
  std::vector<T> partial(size_t(nthreads) * wsize, T(0));
  // A small filter (C/groups * R * S <= 64: an RGB or grey first layer) with its long reduction runs as
  // dot products over each item's materialised column tile: packing for a GEMM would cost more than the
  // arithmetic. Otherwise float32 packs col^T straight from x (Im2colRows); float64 builds the tile.
  const bool dot = std::is_same_v<T, float> && crs <= 64;
  // A pointwise conv with more input than output channels computes dw^T = x dy^T instead: the wide operand
  // (x, C rows) then takes the cheap row-wise packing and only dy (K rows) the transposing one. The
  // partial sums are kept transposed and turned back in the final reduction.
  const bool flip = std::is_same_v<T, float> && !dot && direct && Cg > Kg;
  Scratch<T> col_s(nthreads, std::is_same_v<T, float> && !dot && !(flip && tl.nb > 1) ? 0 : size_t(crs * tl.cols));
  Scratch<T> dyb_s(nthreads, tl.nb > 1 ? size_t(Kg * tl.cols) : 0);
  int used = 1;
#pragma omp parallel num_threads(nthreads) if (worth_threads(p))
  {
#pragma omp single
    used = omp_get_num_threads();
    T* col = col_s.mine();
    T* dyb = dyb_s.mine();
    T* mine = partial.data() + size_t(omp_get_thread_num()) * wsize;
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t blk = it / (p.groups * tl.ntiles), g = (it / tl.ntiles) % p.groups, t = it % tl.ntiles;
      const int64_t n0 = blk * tl.nb, nb = std::min(tl.nb, p.N - n0);
      const int64_t p0 = t * tl.rows, p1 = std::min(p.P, p0 + tl.rows), cols = (p1 - p0) * p.Q;
      int64_t lda;
      const T* amat = gather_dy(p, dy + (n0 * p.K + g * Kg) * PQ + p0 * p.Q, nb, cols, dyb, &lda);
      if constexpr (std::is_same_v<T, float>) {
        if (dot) {
          int64_t ldb;
          const T* bmat = gather_cols(p, x, n0, nb, g, p0, p1, direct, col, &ldb);
          sgemm_nt_dot(Kg, crs, nb * cols, 1.0f, amat, lda, bmat, ldb, true, mine + g * Kg * crs, crs);
          continue;
        }
        if (flip) {
          int64_t ldb;
          const T* bmat = gather_cols(p, x, n0, nb, g, p0, p1, direct, col, &ldb);
          sgemm(false, true, crs, Kg, nb * cols, 1.0f, bmat, ldb, amat, lda, 1.0f, mine + g * Kg * crs, Kg);
          continue;
        }
        if (!direct && p.S >= 4) {  // wide kernel rows: B = col^T generated pixel by pixel, whole runs of S
          sgemm_generated_b(false, false, Kg, crs, nb * cols, 1.0f, amat, lda, Im2colPixels(p, x, n0, g, p0, p1), 1.0f,
                            mine + g * Kg * crs, crs);
          continue;
        }
        if (!(direct && nb == 1)) {
          sgemm_generated_b(false, true, Kg, crs, nb * cols, 1.0f, amat, lda, Im2colRows(p, x, n0, g, p0, p1), 1.0f,
                            mine + g * Kg * crs, crs);
          continue;
        }
      }
      int64_t ldb;
      const T* bmat = gather_cols(p, x, n0, nb, g, p0, p1, direct, col, &ldb);
      gemm(false, true, Kg, crs, nb * cols, T(1), amat, lda, bmat, ldb, T(1), mine + g * Kg * crs, crs);
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < wsize; ++i) {
      // flip: group g's partial block is (crs x Kg); dw's is (Kg x crs)
      const int64_t src = flip ? i / (Kg * crs) * (Kg * crs) + (i % crs) * Kg + (i / crs) % Kg : i;
      T acc = accumulate ? dw[i] : T(0);
      for (int t = 0; t < used; ++t) acc += partial[size_t(t) * wsize + src];
      dw[i] = acc;
    }
  }
}

template <typename T>
void conv2d_bwd_bias_cpu(int64_t N, int64_t K, int64_t PQ, const T* dy, T* db, bool accumulate) {
  // Sums in double for float32 too: a plane sum over N*P*Q terms is where float32 drifts most. Element j of
  // a plane adds into lane j % kLanes (independent chains, so the adds vectorise instead of waiting on one
  // another); the lanes add in order at the end. The order depends on the shape alone: same bits every run
  // and at every thread count.
  constexpr int kLanes = 16;
#pragma omp parallel for num_threads(num_threads()) schedule(static) if (N * K * PQ >= kGrainElements)
  for (int64_t k = 0; k < K; ++k) {
    double lanes[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T* row = dy + (n * K + k) * PQ;
      int64_t j = 0;
      for (; j + kLanes <= PQ; j += kLanes) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) lanes[l] += double(row[j + l]);
      }
      for (int l = 0; j < PQ; ++j, ++l) lanes[l] += double(row[j]);
    }
    double acc = 0;
    for (int l = 0; l < kLanes; ++l) acc += lanes[l];
    db[k] = accumulate ? T(db[k] + acc) : T(acc);
  }
}

#define CK_INSTANTIATE(T)                                                                       \
  template void conv2d_fwd_cpu<T>(const Conv2dParams&, const T*, const T*, const T*, T*, bool); \
  template void conv2d_bwd_data_cpu<T>(const Conv2dParams&, const T*, const T*, T*);            \
  template void conv2d_bwd_weight_cpu<T>(const Conv2dParams&, const T*, const T*, T*, bool);    \
  template void conv2d_bwd_bias_cpu<T>(int64_t, int64_t, int64_t, const T*, T*, bool);
CK_INSTANTIATE(float)
CK_INSTANTIATE(double)
#undef CK_INSTANTIATE

}  // namespace ck
