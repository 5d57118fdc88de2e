// Winograd F(4x4, 3x3) convolution (Lavin & Gray 2016), with the interpolation points 0, +-1, +-2 and the
// scaling of NNPACK's F(6x6, 3x3) / F(4x4, 3x3) kernels:
//
//   B^T = | 4  0 -5  0  1  0 |   G = |  1/4     0     0  |   A^T = | 1  1  1  1  1  0 |
//         | 0 -4 -4  1  1  0 |       | -1/6  -1/6  -1/6  |         | 0  1 -1  2 -2  0 |
//         | 0  4 -4 -1  1  0 |       | -1/6   1/6  -1/6  |         | 0  1  1  4  4  0 |
//         | 0 -2 -1  2  1  0 |       | 1/24  1/12   1/6  |         | 0  1 -1  8 -8  1 |
//         | 0  2 -1 -2  1  0 |       | 1/24 -1/12   1/6  |
//         | 0  4  0 -5  0  1 |       |   0     0     1   |
//
// Forward: U[e][k][c] = (G w[k,c] G^T)[e] once per call; the output is cut into 4x4 tiles (edge tiles
// partial), numbered over (sample, tile row, tile column) and taken in blocks of `tb` tiles. Per (group,
// block) work item: V[e][c][t] = (B^T d B)[e] for the 6x6 input tiles, M[e] = U[e] V[e] (36 GEMMs through
// ck::gemm), then y = A^T M A + bias written straight into the output. Only one block's V and M exist per
// thread (about 4 MiB), never a transformed copy of the whole batch.
//
// The tile transforms, and the cut of blocks into chunks of tiles they work on, are in ops/winograd_tiles.h.
#include "ops/winograd.h"
#include "ops/winograd_tiles.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "common/runtime.h"
#include "common/scratch.h"
#include "gemm/gemm.h"

namespace ck {

bool winograd_applies(const Conv2dParams& p) {
  return p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1;
}

void check_winograd(const char* op, const Conv2dParams& p) {
  CK_CHECK(p.R == 3 && p.S == 3, op, "algorithm 'winograd' needs a 3x3 kernel, got (", p.R, ", ", p.S,
           "); use algorithm 'gemm'");
  CK_CHECK(p.stride_h == 1 && p.stride_w == 1, op, "algorithm 'winograd' needs stride 1, got (", p.stride_h, ", ",
           p.stride_w, "); use algorithm 'gemm'");
  CK_CHECK(p.dil_h == 1 && p.dil_w == 1, op, "algorithm 'winograd' needs dilation 1, got (", p.dil_h, ", ", p.dil_w,
           "); use algorithm 'gemm'");
}

namespace {

using namespace wino;

// V + M of one block. Measured on the shared 3x3 shapes (2 threads): 4 MiB ran 10-30% faster than 1 MiB
// (one L2) in fwd and bwd_data: wider blocks fill the GEMMs' 48-column strips, and the block streams from L3.
constexpr int64_t kBlockBytes = 4 << 20;
constexpr int64_t kMinBlock = 32;

bool worth_threads(const Conv2dParams& p) {
  return 2.0 * double(p.N) * double(p.K) * double(p.P * p.Q) * double(p.Cg() * 9) >= kGrainFlops;
}

// Tiles per block: V (36 x Ci x tb) and M (36 x Co x tb) near kBlockBytes, and at least two work items per
// thread when the problem has few tiles.
template <typename T>
int64_t block_tiles(const Geom& g, int nthreads) {
  const int64_t per_tile = 36 * (g.Ci + g.Co) * int64_t(sizeof(T));
  int64_t tb = std::clamp<int64_t>(kBlockBytes / per_tile, kMinBlock, kMaxBlock);
  const int64_t want_blocks = (2 * int64_t(nthreads) + g.groups - 1) / g.groups;
  tb = std::min(tb, std::max<int64_t>(8, (g.tiles() + want_blocks - 1) / want_blocks));
  // Whole samples per block when a sample's tiles divide a chunk: every chunk then holds whole small
  // planes, which the output transform writes plane by plane (output_chunk).
  const int64_t per = g.TH * g.TW;
  if (per <= kChunk && kChunk % per == 0) tb = std::max(per, tb / per * per);
  return tb;
}

constexpr double kG[6][3] = {{1.0 / 4, 0, 0},
                             {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                             {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                             {1.0 / 24, 1.0 / 12, 1.0 / 6},
                             {1.0 / 24, -1.0 / 12, 1.0 / 6},
                             {0, 0, 1}};

// U[g][e][o][i] = (G f G^T)[e] for the 3x3 filters f of every group g, output channel o and input channel
// i, computed in double and vectorised over i. Forward: f = w[g*Co + o, i]; backward data (swap): f =
// w[g*Ci + i, o] rotated by 180 degrees.
template <typename T>
void filter_transform(const T* w, int64_t groups, int64_t Co, int64_t Ci, bool swap, T* U, bool threads) {
  const int64_t ld = Co * Ci;
#pragma omp parallel for num_threads(num_threads()) schedule(static) if (threads)
  for (int64_t go = 0; go < groups * Co; ++go) {
    const int64_t g = go / Co, o = go % Co;
    const T* f = swap ? w + (g * Ci * Co + o) * 9 : w + go * Ci * 9;
    const int64_t fs = swap ? Co * 9 : 9;  // from one input channel's filter to the next
    T* u = U + (g * 36 * Co + o) * Ci;
    for (int64_t i0 = 0; i0 < Ci; i0 += kChunk) {
      const int n = int(std::min<int64_t>(kChunk, Ci - i0));
      alignas(64) double t[6][3][kChunk];  // t[a][s][i] = (G f)[a][s]
      for (int s = 0; s < 3; ++s) {
        const int k0 = swap ? 8 - s : s, k1 = swap ? 5 - s : 3 + s, k2 = swap ? 2 - s : 6 + s;
        for (int i = 0; i < n; ++i) {
          const T* fi = f + (i0 + i) * fs;
          const double g0 = fi[k0], g1 = fi[k1], g2 = fi[k2];
          for (int a = 0; a < 6; ++a) t[a][s][i] = kG[a][0] * g0 + kG[a][1] * g1 + kG[a][2] * g2;
        }
      }
      for (int a = 0; a < 6; ++a)
        for (int b = 0; b < 6; ++b) {
          T* ue = u + (a * 6 + b) * ld + i0;
#pragma omp simd
          for (int i = 0; i < n; ++i) ue[i] = T(t[a][0][i] * kG[b][0] + t[a][1][i] * kG[b][1] + t[a][2][i] * kG[b][2]);
        }
    }
  }
}

// The forward pass of a Geom: in (N, groups*Ci, Hi, Wi), U (groups, 36, Co, Ci) transformed filters, bias
// (groups*Co) or null -> out (N, groups*Co, Ho, Wo). Writes (=).
template <typename T>
void wino_forward(const Geom& g, const T* in, const T* U, const T* bias, T* out, bool threads, bool relu = false) {
  const int nthreads = num_threads();
  const int64_t tb = block_tiles<T>(g, nthreads), nblocks = (g.tiles() + tb - 1) / tb;
  const int64_t items = g.groups * nblocks, HWi = g.Hi * g.Wi, HWo = g.Ho * g.Wo;
  const int64_t in_ns = g.groups * g.Ci * HWi, out_ns = g.groups * g.Co * HWo;
  Scratch<T> vs(nthreads, size_t(36 * g.Ci * tb)), ms(nthreads, size_t(36 * g.Co * tb));
  // U[e] is the A of that element's GEMM in every block: packed once here (float32), not once per block.
  std::vector<PackedA> up;
  if constexpr (std::is_same_v<T, float>) {
    if (nblocks > 1) {
      up.reserve(size_t(36 * g.groups));
      for (int64_t i = 0; i < 36 * g.groups; ++i) up.emplace_back(false, g.Co, g.Ci, U + i * g.Co * g.Ci, g.Ci);
    }
  }
#pragma omp parallel num_threads(nthreads) if (threads)
  {
    T* V = vs.mine();
    T* M = ms.mine();
#pragma omp for schedule(dynamic, 1)  // items write disjoint outputs: any order gives the same bits
    for (int64_t it = 0; it < items; ++it) {
      const int64_t gr = it / nblocks, blk = it % nblocks;
      const int64_t t0 = blk * tb, t1 = std::min(g.tiles(), t0 + tb), nt = t1 - t0;
      const Chunks ch(g, t0, t1);
      for (int64_t c = 0; c < g.Ci; ++c)
        for (int k = 0; k < ch.count; ++k)
          input_chunk(g, in + (gr * g.Ci + c) * HWi, in_ns, ch.begin(k), ch.end(k), chunk_len(nt, k),
                      V + c * tb + k * kChunk, g.Ci * tb);
      const T* Ug = U + gr * 36 * g.Co * g.Ci;
      for (int e = 0; e < 36; ++e)
        gemm(false, false, g.Co, nt, g.Ci, T(1), Ug + e * g.Co * g.Ci, g.Ci, V + e * g.Ci * tb, tb, T(0),
             M + e * g.Co * tb, tb, up.empty() ? nullptr : &up[size_t(gr * 36 + e)]);
      for (int64_t k = 0; k < g.Co; ++k) {
        const T bk = bias ? bias[gr * g.Co + k] : T(0);
        for (int j = 0; j < ch.count; ++j)
          output_chunk(g, M + k * tb + j * kChunk, g.Co * tb, ch.begin(j), ch.end(j), chunk_len(nt, j), bk,
                       out + (gr * g.Co + k) * HWo, out_ns, relu);
      }
    }
  }
}

}  // namespace

template <typename T>
void conv2d_fwd_winograd_cpu(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y, bool relu) {
  check_winograd("conv2d_fwd", p);
  if (p.N == 0) return;
  const int64_t Cg = p.Cg(), Kg = p.Kg();
  std::vector<T> U(size_t(36 * p.K * Cg));
  filter_transform(w, p.groups, Kg, Cg, false, U.data(), worth_threads(p));
  const Geom g = make_geom(p.N, p.groups, Cg, p.H, p.W, Kg, p.P, p.Q, p.pad_h, p.pad_w);
  wino_forward(g, x, U.data(), b, y, worth_threads(p), relu);
}

template <typename T>
void conv2d_bwd_data_winograd_cpu(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  check_winograd("conv2d_bwd_data", p);
  if (p.N == 0) return;
  const int64_t Cg = p.Cg(), Kg = p.Kg();
  // dx[c] = sum_k dy[k] correlated with w[k, c] rotated: a forward pass from Kg to Cg channels per group,
  // over dy padded by 2 - pad.
  std::vector<T> U(size_t(36 * Cg * p.K));
  filter_transform(w, p.groups, Cg, Kg, true, U.data(), worth_threads(p));
  const Geom g = make_geom(p.N, p.groups, Kg, p.P, p.Q, Cg, p.H, p.W, 2 - p.pad_h, 2 - p.pad_w);
  wino_forward(g, dy, U.data(), static_cast<const T*>(nullptr), dx, worth_threads(p));
}

template <typename T>
void conv2d_bwd_weight_winograd_cpu(const Conv2dParams& p, const T* dy, const T* x, T* dw, bool accumulate) {
  check_winograd("conv2d_bwd_weight", p);
  const int64_t Cg = p.Cg(), Kg = p.Kg(), wsize = p.K * Cg * 9;
  if (p.N == 0) {
    if (!accumulate) std::fill(dw, dw + wsize, T(0));
    return;
  }
  const Geom g = make_geom(p.N, p.groups, Cg, p.H, p.W, Kg, p.P, p.Q, p.pad_h, p.pad_w);
  const int nthreads = num_threads();
  const int64_t tb = block_tiles<T>(g, nthreads), nblocks = (g.tiles() + tb - 1) / tb;
  const int64_t items = p.groups * nblocks, HW = p.H * p.W, PQ = p.P * p.Q;
  const size_t usize = size_t(p.groups * 36 * Kg * Cg);  // dU[g][e][k][c]
  // Each thread sums its tiles into its own dU; the partial sums are added in thread order afterwards, so
  // the result is deterministic for a given thread count.
  std::vector<T> partial(size_t(nthreads) * usize, T(0));
  Scratch<T> vs(nthreads, size_t(36 * Cg * tb)), ys(nthreads, size_t(36 * Kg * tb));
  int used = 1;
#pragma omp parallel num_threads(nthreads) if (worth_threads(p))
  {
#pragma omp single
    used = omp_get_num_threads();
    T* V = vs.mine();
    T* Y = ys.mine();
    T* mine = partial.data() + size_t(omp_get_thread_num()) * usize;
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t gr = it / nblocks, blk = it % nblocks;
      const int64_t t0 = blk * tb, t1 = std::min(g.tiles(), t0 + tb), nt = t1 - t0;
      const Chunks ch(g, t0, t1);
      for (int64_t c = 0; c < Cg; ++c)
        for (int j = 0; j < ch.count; ++j)
          input_chunk(g, x + (gr * Cg + c) * HW, p.C * HW, ch.begin(j), ch.end(j), chunk_len(nt, j),
                      V + c * tb + j * kChunk, Cg * tb);
      for (int64_t k = 0; k < Kg; ++k)
        for (int j = 0; j < ch.count; ++j)
          grad_chunk(g, dy + (gr * Kg + k) * PQ, p.K * PQ, ch.begin(j), ch.end(j), chunk_len(nt, j),
                     Y + k * tb + j * kChunk, Kg * tb);
      T* dUg = mine + gr * 36 * Kg * Cg;
      for (int e = 0; e < 36; ++e)
        gemm(false, true, Kg, Cg, nt, T(1), Y + e * Kg * tb, tb, V + e * Cg * tb, tb, T(1), dUg + e * Kg * Cg, Cg);
    }
    // dw[k, c] = G^T dU[., k, c] G in double, dU the thread partials summed in thread order; vectorised
    // over c.
#pragma omp for schedule(static)
    for (int64_t gk = 0; gk < p.K; ++gk) {
      const int64_t gr = gk / Kg, k = gk % Kg;
      for (int64_t c0 = 0; c0 < Cg; c0 += kChunk) {
        const int n = int(std::min<int64_t>(kChunk, Cg - c0));
        alignas(64) double u[36][kChunk];
        for (int e = 0; e < 36; ++e) {
          const size_t off = size_t(((gr * 36 + e) * Kg + k) * Cg + c0);
          for (int i = 0; i < n; ++i) {
            T acc = partial[off + size_t(i)];
            for (int t = 1; t < used; ++t) acc += partial[size_t(t) * usize + off + size_t(i)];
            u[e][i] = double(acc);
          }
        }
        alignas(64) double t[3][6][kChunk];  // t[r][b] = (G^T dU)[r][b]
        for (int r = 0; r < 3; ++r)
          for (int b = 0; b < 6; ++b)
#pragma omp simd
            for (int i = 0; i < n; ++i) {
              double s = 0;
              for (int a = 0; a < 6; ++a) s += kG[a][r] * u[a * 6 + b][i];
              t[r][b][i] = s;
            }
        T* d = dw + (gk * Cg + c0) * 9;
        for (int r = 0; r < 3; ++r)
          for (int s = 0; s < 3; ++s)
            for (int i = 0; i < n; ++i) {
              double v = 0;
              for (int b = 0; b < 6; ++b) v += t[r][b][i] * kG[b][s];
              T& out = d[i * 9 + r * 3 + s];
              out = accumulate ? T(out + v) : T(v);
            }
      }
    }
  }
}

#define CK_INSTANTIATE(T)                                                                                \
  template void conv2d_fwd_winograd_cpu<T>(const Conv2dParams&, const T*, const T*, const T*, T*, bool); \
  template void conv2d_bwd_data_winograd_cpu<T>(const Conv2dParams&, const T*, const T*, T*);            \
  template void conv2d_bwd_weight_winograd_cpu<T>(const Conv2dParams&, const T*, const T*, T*, bool);
CK_INSTANTIATE(float)
CK_INSTANTIATE(double)
#undef CK_INSTANTIATE

}  // namespace ck
