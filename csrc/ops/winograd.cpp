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
// thread (sized to stay near L2), never a transformed copy of the whole batch.
//
// The transforms run over up to kChunk tiles of one tile row at once, on rows de-interleaved by tile phase
// (the four columns 4m .. 4m+3 of tile m go to four arrays indexed by m), so every inner loop is a plain,
// contiguous loop over tiles that the compiler vectorises.
#include "ops/winograd.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "common/runtime.h"

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

constexpr int kChunk = 64;                // tiles transformed together (the stack buffers' width)
constexpr int64_t kBlockBytes = 1 << 20;  // V + M of one block: about one core's L2
constexpr int64_t kMinBlock = 32, kMaxBlock = 256;

// One Winograd pass: a stride-1 3x3 correlation of `groups` groups of Ci input planes (Hi, Wi) into Co output
// planes (Ho, Wo) each. The input tile of output tile (th, tw) starts at row 4*th - off_h, column 4*tw - off_w
// (zeros outside the plane); off may be negative (backward data with padding > 2).
struct Geom {
  int64_t N, groups, Ci, Hi, Wi, Co, Ho, Wo, off_h, off_w;
  int64_t TH, TW;  // tile rows and columns of one output plane
  int64_t tiles() const { return N * TH * TW; }
};

Geom make_geom(int64_t N, int64_t groups, int64_t Ci, int64_t Hi, int64_t Wi, int64_t Co, int64_t Ho, int64_t Wo,
               int64_t off_h, int64_t off_w) {
  return Geom{N, groups, Ci, Hi, Wi, Co, Ho, Wo, off_h, off_w, (Ho + 3) / 4, (Wo + 3) / 4};
}

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
  return tb;
}

// Calls f(n, th, tw, nt, col) for the runs of at most kChunk tiles of one tile row that make up the tiles
// [t0, t1) of the batch; col is the first tile's position in the block.
template <typename F>
inline void for_runs(const Geom& g, int64_t t0, int64_t t1, F&& f) {
  const int64_t per = g.TH * g.TW;
  for (int64_t t = t0; t < t1;) {
    const int64_t n = t / per, r = t % per, th = r / g.TW, tw = r % g.TW;
    const int nt = int(std::min<int64_t>({g.TW - tw, t1 - t, kChunk}));
    f(n, th, tw, nt, t - t0);
    t += nt;
  }
}

// Per-thread scratch, allocated before a parallel region: an allocation failure then surfaces as
// std::bad_alloc (MemoryError in Python) instead of escaping an OpenMP region and aborting the process.
template <typename T>
struct Scratch {
  std::vector<T> buf;
  size_t per_thread;
  Scratch(int nthreads, size_t per) : buf(size_t(nthreads) * per), per_thread(per) {}
  T* mine() { return buf.data() + size_t(omp_get_thread_num()) * per_thread; }
};

// row[0, len) = src[j0 + j] for j0 + j in [0, n), zeros elsewhere.
template <typename T>
inline void padded_row(const T* src, int64_t n, int64_t j0, int64_t len, T* row) {
  const int64_t lo = std::clamp<int64_t>(-j0, 0, len), hi = std::clamp<int64_t>(n - j0, lo, len);
  std::fill(row, row + lo, T(0));
  if (hi > lo) std::memcpy(row + lo, src + j0 + lo, sizeof(T) * size_t(hi - lo));
  std::fill(row + hi, row + len, T(0));
}

// ph[r][m] = row[4m + r] for m < len (row holds 4 * len elements).
template <typename T>
inline void deinterleave4(const T* __restrict row, int len, T (*__restrict ph)[kChunk + 1]) {
  for (int m = 0; m < len; ++m) {
    ph[0][m] = row[4 * m];
    ph[1][m] = row[4 * m + 1];
    ph[2][m] = row[4 * m + 2];
    ph[3][m] = row[4 * m + 3];
  }
}

// The 1-D input transform o = B^T d over n lanes; d and o are six arrays each.
template <typename T>
inline void bt6(const T* __restrict d0, const T* __restrict d1, const T* __restrict d2, const T* __restrict d3,
                const T* __restrict d4, const T* __restrict d5, T* __restrict o0, T* __restrict o1, T* __restrict o2,
                T* __restrict o3, T* __restrict o4, T* __restrict o5, int n) {
#pragma omp simd
  for (int m = 0; m < n; ++m) {
    const T a = d4[m] - T(4) * d2[m], b = d3[m] - T(4) * d1[m];
    const T c = d4[m] - d2[m], dd = T(2) * (d3[m] - d1[m]);
    o0[m] = T(4) * d0[m] - T(5) * d2[m] + d4[m];
    o1[m] = a + b;
    o2[m] = a - b;
    o3[m] = c + dd;
    o4[m] = c - dd;
    o5[m] = T(4) * d1[m] - T(5) * d3[m] + d5[m];
  }
}

// The input tiles of one channel plane x (Hi, Wi) for the nt tiles of tile row th from tile column tw: the
// 6x6 window from row ih0 = 4*th - off_h, column iw0 + 4m, transformed to B^T d B; element e of tile m goes
// to v[e * lde + m].
template <typename T>
void input_tiles(const T* x, int64_t Hi, int64_t Wi, int64_t ih0, int64_t iw0, int nt, T* v, int64_t lde) {
  alignas(64) T row[4 * (kChunk + 1)];
  alignas(64) T ph[4][kChunk + 1];
  alignas(64) T h[6][6][kChunk];  // h[i][b][m]: row i of tile m, transformed along the row
  for (int i = 0; i < 6; ++i) {
    const int64_t ih = ih0 + i;
    if (ih < 0 || ih >= Hi) {
      for (int b = 0; b < 6; ++b) std::fill(h[i][b], h[i][b] + nt, T(0));
      continue;
    }
    padded_row(x + ih * Wi, Wi, iw0, 4 * (nt + 1), row);
    deinterleave4(row, nt + 1, ph);
    bt6(ph[0], ph[1], ph[2], ph[3], ph[0] + 1, ph[1] + 1, h[i][0], h[i][1], h[i][2], h[i][3], h[i][4], h[i][5], nt);
  }
  for (int b = 0; b < 6; ++b)
    bt6(h[0][b], h[1][b], h[2][b], h[3][b], h[4][b], h[5][b], v + (0 * 6 + b) * lde, v + (1 * 6 + b) * lde,
        v + (2 * 6 + b) * lde, v + (3 * 6 + b) * lde, v + (4 * 6 + b) * lde, v + (5 * 6 + b) * lde, nt);
}

// The 1-D output transform o = A^T m over n lanes (six inputs, four outputs).
template <typename T>
inline void at4(const T* __restrict m0, const T* __restrict m1, const T* __restrict m2, const T* __restrict m3,
                const T* __restrict m4, const T* __restrict m5, T* __restrict o0, T* __restrict o1, T* __restrict o2,
                T* __restrict o3, int n) {
#pragma omp simd
  for (int m = 0; m < n; ++m) {
    const T s12 = m1[m] + m2[m], d12 = m1[m] - m2[m], s34 = m3[m] + m4[m], d34 = m3[m] - m4[m];
    o0[m] = m0[m] + s12 + s34;
    o1[m] = d12 + T(2) * d34;
    o2[m] = s12 + T(4) * s34;
    o3[m] = d12 + T(8) * d34 + m5[m];
  }
}

// The output tiles of one output channel: element e of tile m at mt[e * lde + m] -> A^T M A + bias, written
// into the plane y (Ho, Wo) from row oh0, columns ow0 + 4m; the parts of edge tiles outside it are dropped.
template <typename T>
void output_tiles(const T* mt, int64_t lde, int nt, T bias, T* y, int64_t Ho, int64_t Wo, int64_t oh0, int64_t ow0) {
  alignas(64) T t[6][4][kChunk];  // t[a][q][m]: row a of tile m, transformed along the row
  alignas(64) T o[4][4][kChunk];  // o[p][q][m]: output row p, column 4m + q
  alignas(64) T row[4 * kChunk];
  for (int a = 0; a < 6; ++a) {
    const T* r = mt + (a * 6) * lde;
    at4(r, r + lde, r + 2 * lde, r + 3 * lde, r + 4 * lde, r + 5 * lde, t[a][0], t[a][1], t[a][2], t[a][3], nt);
  }
  for (int q = 0; q < 4; ++q)
    at4(t[0][q], t[1][q], t[2][q], t[3][q], t[4][q], t[5][q], o[0][q], o[1][q], o[2][q], o[3][q], nt);
  const int64_t rows = std::min<int64_t>(4, Ho - oh0), cols = std::min<int64_t>(4 * nt, Wo - ow0);
  for (int p = 0; p < rows; ++p) {
    for (int m = 0; m < nt; ++m) {
      row[4 * m] = o[p][0][m] + bias;
      row[4 * m + 1] = o[p][1][m] + bias;
      row[4 * m + 2] = o[p][2][m] + bias;
      row[4 * m + 3] = o[p][3][m] + bias;
    }
    std::memcpy(y + (oh0 + p) * Wo + ow0, row, sizeof(T) * size_t(cols));
  }
}

// The 1-D output-gradient transform z = A y over n lanes (four inputs, six outputs).
template <typename T>
inline void a6(const T* __restrict y0, const T* __restrict y1, const T* __restrict y2, const T* __restrict y3,
               T* __restrict z0, T* __restrict z1, T* __restrict z2, T* __restrict z3, T* __restrict z4,
               T* __restrict z5, int n) {
#pragma omp simd
  for (int m = 0; m < n; ++m) {
    const T e = y0[m] + y2[m], o = y1[m] + y3[m];
    const T e4 = y0[m] + T(4) * y2[m], o4 = T(2) * y1[m] + T(8) * y3[m];
    z0[m] = y0[m];
    z1[m] = e + o;
    z2[m] = e - o;
    z3[m] = e4 + o4;
    z4[m] = e4 - o4;
    z5[m] = y3[m];
  }
}

// The output-gradient tiles of one plane dy (Ho, Wo): the 4x4 block from row oh0, column ow0 + 4m (zeros
// outside the plane) -> A dY A^T; element e of tile m goes to v[e * lde + m].
template <typename T>
void grad_tiles(const T* dy, int64_t Ho, int64_t Wo, int64_t oh0, int64_t ow0, int nt, T* v, int64_t lde) {
  alignas(64) T row[4 * (kChunk + 1)];
  alignas(64) T ph[4][kChunk + 1];
  alignas(64) T z[4][6][kChunk];  // z[p][b][m]: row p of tile m, transformed along the row
  for (int p = 0; p < 4; ++p) {
    const int64_t oh = oh0 + p;
    if (oh >= Ho) {
      for (int b = 0; b < 6; ++b) std::fill(z[p][b], z[p][b] + nt, T(0));
      continue;
    }
    padded_row(dy + oh * Wo, Wo, ow0, 4 * nt, row);
    deinterleave4(row, nt, ph);
    a6(ph[0], ph[1], ph[2], ph[3], z[p][0], z[p][1], z[p][2], z[p][3], z[p][4], z[p][5], nt);
  }
  for (int b = 0; b < 6; ++b)
    a6(z[0][b], z[1][b], z[2][b], z[3][b], v + (0 * 6 + b) * lde, v + (1 * 6 + b) * lde, v + (2 * 6 + b) * lde,
       v + (3 * 6 + b) * lde, v + (4 * 6 + b) * lde, v + (5 * 6 + b) * lde, nt);
}

constexpr double kG[6][3] = {{1.0 / 4, 0, 0},
                             {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                             {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                             {1.0 / 24, 1.0 / 12, 1.0 / 6},
                             {1.0 / 24, -1.0 / 12, 1.0 / 6},
                             {0, 0, 1}};

// u[e * ld] = (G f G^T)[e] for the 3x3 filter f (rotated by 180 degrees when rot), computed in double.
template <typename T>
inline void filter_tile(const T* f, bool rot, T* u, int64_t ld) {
  double g[3][3], t[6][3];
  for (int r = 0; r < 3; ++r)
    for (int s = 0; s < 3; ++s) g[r][s] = double(rot ? f[(2 - r) * 3 + (2 - s)] : f[r * 3 + s]);
  for (int a = 0; a < 6; ++a)
    for (int s = 0; s < 3; ++s) t[a][s] = kG[a][0] * g[0][s] + kG[a][1] * g[1][s] + kG[a][2] * g[2][s];
  for (int a = 0; a < 6; ++a)
    for (int b = 0; b < 6; ++b) u[(a * 6 + b) * ld] = T(t[a][0] * kG[b][0] + t[a][1] * kG[b][1] + t[a][2] * kG[b][2]);
}

// The forward pass of a Geom: in (N, groups*Ci, Hi, Wi), U (groups, 36, Co, Ci) transformed filters, bias
// (groups*Co) or null -> out (N, groups*Co, Ho, Wo). Writes (=).
template <typename T>
void wino_forward(const Geom& g, const T* in, const T* U, const T* bias, T* out, bool threads) {
  const int nthreads = num_threads();
  const int64_t tb = block_tiles<T>(g, nthreads), nblocks = (g.tiles() + tb - 1) / tb;
  const int64_t items = g.groups * nblocks, HWi = g.Hi * g.Wi, HWo = g.Ho * g.Wo;
  Scratch<T> vs(nthreads, size_t(36 * g.Ci * tb)), ms(nthreads, size_t(36 * g.Co * tb));
#pragma omp parallel num_threads(nthreads) if (threads)
  {
    T* V = vs.mine();
    T* M = ms.mine();
#pragma omp for schedule(dynamic, 1)  // items write disjoint outputs: any order gives the same bits
    for (int64_t it = 0; it < items; ++it) {
      const int64_t gr = it / nblocks, blk = it % nblocks;
      const int64_t t0 = blk * tb, t1 = std::min(g.tiles(), t0 + tb), nt = t1 - t0;
      for (int64_t c = 0; c < g.Ci; ++c)
        for_runs(g, t0, t1, [&](int64_t n, int64_t th, int64_t tw, int m, int64_t col) {
          input_tiles(in + ((n * g.groups + gr) * g.Ci + c) * HWi, g.Hi, g.Wi, 4 * th - g.off_h, 4 * tw - g.off_w, m,
                      V + c * tb + col, g.Ci * tb);
        });
      const T* Ug = U + gr * 36 * g.Co * g.Ci;
      for (int e = 0; e < 36; ++e)
        gemm(false, false, g.Co, nt, g.Ci, T(1), Ug + e * g.Co * g.Ci, g.Ci, V + e * g.Ci * tb, tb, T(0),
             M + e * g.Co * tb, tb);
      for (int64_t k = 0; k < g.Co; ++k) {
        const T bk = bias ? bias[gr * g.Co + k] : T(0);
        for_runs(g, t0, t1, [&](int64_t n, int64_t th, int64_t tw, int m, int64_t col) {
          output_tiles(M + k * tb + col, g.Co * tb, m, bk, out + ((n * g.groups + gr) * g.Co + k) * HWo, g.Ho, g.Wo,
                       4 * th, 4 * tw);
        });
      }
    }
  }
}

}  // namespace

template <typename T>
void conv2d_fwd_winograd_cpu(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  check_winograd("conv2d_fwd", p);
  if (p.N == 0) return;
  const int64_t Cg = p.Cg(), Kg = p.Kg();
  std::vector<T> U(size_t(36 * p.K * Cg));
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t c = 0; c < Cg; ++c)
        filter_tile(w + ((g * Kg + k) * Cg + c) * 9, false, U.data() + (g * 36 * Kg + k) * Cg + c, Kg * Cg);
  const Geom g = make_geom(p.N, p.groups, Cg, p.H, p.W, Kg, p.P, p.Q, p.pad_h, p.pad_w);
  wino_forward(g, x, U.data(), b, y, worth_threads(p));
}

template <typename T>
void conv2d_bwd_data_winograd_cpu(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  check_winograd("conv2d_bwd_data", p);
  if (p.N == 0) return;
  const int64_t Cg = p.Cg(), Kg = p.Kg();
  // dx[c] = sum_k dy[k] correlated with w[k, c] rotated: a forward pass from Kg to Cg channels per group,
  // over dy padded by 2 - pad.
  std::vector<T> U(size_t(36 * Cg * p.K));
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t k = 0; k < Kg; ++k)
        filter_tile(w + ((g * Kg + k) * Cg + c) * 9, true, U.data() + (g * 36 * Cg + c) * Kg + k, Cg * Kg);
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
  const int64_t usize = p.groups * 36 * Kg * Cg;  // dU[g][e][k][c]
  // Each thread sums its tiles into its own dU; the partial sums are added in thread order afterwards, so
  // the result is deterministic for a given thread count.
  std::vector<T> partial(size_t(nthreads) * size_t(usize), T(0)), dU(static_cast<size_t>(usize));
  Scratch<T> vs(nthreads, size_t(36 * Cg * tb)), ys(nthreads, size_t(36 * Kg * tb));
  int used = 1;
#pragma omp parallel num_threads(nthreads) if (worth_threads(p))
  {
#pragma omp single
    used = omp_get_num_threads();
    T* V = vs.mine();
    T* Y = ys.mine();
    T* mine = partial.data() + size_t(omp_get_thread_num()) * size_t(usize);
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t gr = it / nblocks, blk = it % nblocks;
      const int64_t t0 = blk * tb, t1 = std::min(g.tiles(), t0 + tb), nt = t1 - t0;
      for (int64_t c = 0; c < Cg; ++c)
        for_runs(g, t0, t1, [&](int64_t n, int64_t th, int64_t tw, int m, int64_t col) {
          input_tiles(x + (n * p.C + gr * Cg + c) * HW, p.H, p.W, 4 * th - p.pad_h, 4 * tw - p.pad_w, m,
                      V + c * tb + col, Cg * tb);
        });
      for (int64_t k = 0; k < Kg; ++k)
        for_runs(g, t0, t1, [&](int64_t n, int64_t th, int64_t tw, int m, int64_t col) {
          grad_tiles(dy + (n * p.K + gr * Kg + k) * PQ, p.P, p.Q, 4 * th, 4 * tw, m, Y + k * tb + col, Kg * tb);
        });
      T* dUg = mine + gr * 36 * Kg * Cg;
      for (int e = 0; e < 36; ++e)
        gemm(false, true, Kg, Cg, nt, T(1), Y + e * Kg * tb, tb, V + e * Cg * tb, tb, T(1), dUg + e * Kg * Cg, Cg);
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < usize; ++i) {
      T acc = T(0);
      for (int t = 0; t < used; ++t) acc += partial[size_t(t) * size_t(usize) + size_t(i)];
      dU[size_t(i)] = acc;
    }
    // dw[k, c] = G^T dU[., k, c] G, in double.
#pragma omp for schedule(static)
    for (int64_t f = 0; f < p.K * Cg; ++f) {
      const int64_t gr = f / (Kg * Cg), kc = f % (Kg * Cg);
      const T* u = dU.data() + gr * 36 * Kg * Cg + kc;
      double t[3][6];
      for (int r = 0; r < 3; ++r)
        for (int b = 0; b < 6; ++b) {
          double s = 0;
          for (int a = 0; a < 6; ++a) s += kG[a][r] * double(u[(a * 6 + b) * Kg * Cg]);
          t[r][b] = s;
        }
      T* d = dw + f * 9;
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) {
          double v = 0;
          for (int b = 0; b < 6; ++b) v += t[r][b] * kG[b][s];
          d[r * 3 + s] = accumulate ? T(d[r * 3 + s] + v) : T(v);
        }
    }
  }
}

#define CK_INSTANTIATE(T)                                                                          \
  template void conv2d_fwd_winograd_cpu<T>(const Conv2dParams&, const T*, const T*, const T*, T*); \
  template void conv2d_bwd_data_winograd_cpu<T>(const Conv2dParams&, const T*, const T*, T*);      \
  template void conv2d_bwd_weight_winograd_cpu<T>(const Conv2dParams&, const T*, const T*, T*, bool);
CK_INSTANTIATE(float)
CK_INSTANTIATE(double)
#undef CK_INSTANTIATE

}  // namespace ck
