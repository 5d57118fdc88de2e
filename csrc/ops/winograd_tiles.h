// The tile machinery of the Winograd F(4x4, 3x3) kernels (ops/winograd.cpp): the geometry of one pass, the cut
// of a block of tiles into chunks and runs, and the input, output and output-gradient tile transforms.
// Internal to winograd.cpp; the matrices are written out there.
//
// The transforms run over chunks of up to kChunk consecutive tiles of a block, whatever tile rows and
// samples they come from (an 8x8 plane has only 2 tiles per tile row). The tiles are first gathered into
// arrays indexed by tile (element (i, j) of tile m at d[i][j][m], rows read with stride 4 by phase), so
// every transform is a plain, contiguous loop over the chunk's tiles that the compiler vectorises.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace ck::wino {

constexpr int kChunk = 64;          // tiles transformed together (the stack buffers' width)
constexpr int64_t kMaxBlock = 256;  // tiles per block, at most

// One Winograd pass: a stride-1 3x3 correlation of `groups` groups of Ci input planes (Hi, Wi) into Co output
// planes (Ho, Wo) each. The input tile of output tile (th, tw) starts at row 4*th - off_h, column 4*tw - off_w
// (zeros outside the plane); off may be negative (backward data with padding > 2).
struct Geom {
  int64_t N, groups, Ci, Hi, Wi, Co, Ho, Wo, off_h, off_w;
  int64_t TH, TW;  // tile rows and columns of one output plane
  int64_t tiles() const { return N * TH * TW; }
};

inline Geom make_geom(int64_t N, int64_t groups, int64_t Ci, int64_t Hi, int64_t Wi, int64_t Co, int64_t Ho, int64_t Wo,
                      int64_t off_h, int64_t off_w) {
  return Geom{N, groups, Ci, Hi, Wi, Co, Ho, Wo, off_h, off_w, (Ho + 3) / 4, (Wo + 3) / 4};
}

// A run of tiles of one tile row: sample n, tile row th, tiles tw .. tw + nt - 1, at position col of its chunk.
struct Run {
  int64_t n, th, tw;
  int nt, col;
};
constexpr int kMaxRuns = kMaxBlock + kMaxBlock / kChunk + 1;

// Cuts the tiles [t0, t1) of the batch (at most kMaxBlock) into chunks of kChunk tiles (the last one shorter)
// and each chunk into runs; chunk k has the runs [first[k], first[k + 1]). Returns the number of chunks. Done
// once per block: the cut is the same for every channel.
inline int block_runs(const Geom& g, int64_t t0, int64_t t1, Run* runs, int* first) {
  const int64_t per = g.TH * g.TW;
  int nr = 0, nc = 0;
  for (int64_t c0 = t0; c0 < t1; c0 += kChunk) {
    first[nc++] = nr;
    const int64_t ce = std::min(t1, c0 + kChunk);
    for (int64_t t = c0; t < ce;) {
      const int64_t n = t / per, r = t % per, th = r / g.TW, tw = r % g.TW;
      const int nt = int(std::min<int64_t>(g.TW - tw, ce - t));
      runs[nr++] = Run{n, th, tw, nt, int(t - c0)};
      t += nt;
    }
  }
  first[nc] = nr;
  return nc;
}

// Tiles in chunk k of a block of nt tiles.
inline int chunk_len(int64_t nt, int k) { return int(std::min<int64_t>(kChunk, nt - int64_t(k) * kChunk)); }

// The runs of one block, by chunk.
struct Chunks {
  Run runs[kMaxRuns];
  int first[kMaxBlock / kChunk + 2];
  int count;
  Chunks(const Geom& g, int64_t t0, int64_t t1) : count(block_runs(g, t0, t1, runs, first)) {}
  const Run* begin(int k) const { return runs + first[k]; }
  const Run* end(int k) const { return runs + first[k + 1]; }
};

// d[j][col + m] = element iw0 + 4m + j of the row src of width n (zero outside [0, n)), for j < J, m < nt:
// the J columns of each of nt tiles, de-interleaved by phase. The tiles inside the row are read in place
// with stride 4; only the tiles crossing an edge (one at each end of a run for padding 1) take the checked
// scalar path.
template <typename T, int J>
inline void gather_row(const T* src, int64_t n, int64_t iw0, int nt, T (*__restrict d)[kChunk], int col) {
  int64_t lo = iw0 >= 0 ? 0 : (-iw0 + 3) / 4;                 // first tile with iw0 + 4m >= 0
  int64_t hi = n - J - iw0 >= 0 ? (n - J - iw0) / 4 + 1 : 0;  // past the last with iw0 + 4m + J <= n
  lo = std::min<int64_t>(lo, nt);
  hi = std::clamp<int64_t>(hi, lo, nt);
  auto edge = [&](int64_t m) {
    for (int j = 0; j < J; ++j) {
      const int64_t iw = iw0 + 4 * m + j;
      d[j][col + m] = iw >= 0 && iw < n ? src[iw] : T(0);
    }
  };
  for (int64_t m = 0; m < lo; ++m) edge(m);
  for (int64_t m = hi; m < nt; ++m) edge(m);
  const int64_t mid = hi - lo;
  if (mid <= 0) return;
  const T* __restrict s = src + iw0 + 4 * lo;
  T* __restrict d0 = d[0] + col + lo;
  T* __restrict d1 = d[1] + col + lo;
  T* __restrict d2 = d[2] + col + lo;
  T* __restrict d3 = d[3] + col + lo;
  for (int64_t m = 0; m < mid; ++m) {
    d0[m] = s[4 * m];
    d1[m] = s[4 * m + 1];
    d2[m] = s[4 * m + 2];
    d3[m] = s[4 * m + 3];
  }
  if constexpr (J == 6) {
    T* __restrict d4 = d[4] + col + lo;
    T* __restrict d5 = d[5] + col + lo;
    for (int64_t m = 0; m < mid; ++m) {
      d4[m] = s[4 * m + 4];
      d5[m] = s[4 * m + 5];
    }
  }
}

// Small planes (a sample's tiles fit in one chunk: 32x32 outputs and below) are read through copies of the
// chunk's sample planes with a zero border, laid out as the tiles see them (the tile grid's rows x columns
// plus the window's overhang): every tile then reads in place, with no bounds checks and no per-run loop
// (a run is only 2 tiles on an 8x8 plane, too short for the vectorised row gather). kPadBuf bounds the
// copies (a stack buffer): the chunk's samples, plus one when the chunk starts inside a sample.
constexpr int64_t kPadBuf = 4096;

// The padded plane of a pass whose windows are `span` wide (6 for input tiles, 4 for output-gradient
// tiles); row/column 0 holds plane row/column -off.
struct PadGeom {
  int64_t PH = 0, PW = 0, r_lo = 0, r_hi = 0, c_lo = 0, c_hi = 0, off_h = 0, off_w = 0;
  bool use = false;
  PadGeom(int64_t TH, int64_t TW, int64_t H, int64_t W, int64_t oh, int64_t ow, int span)
      : PH(4 * TH + span - 4), PW(4 * TW + span - 4), off_h(oh), off_w(ow) {
    use = TH * TW <= kChunk && (kChunk / (TH * TW) + 2) * PH * PW <= kPadBuf;
    r_lo = std::max<int64_t>(0, oh), r_hi = std::max(r_lo, std::min(PH, H + oh));
    c_lo = std::max<int64_t>(0, ow), c_hi = std::max(c_lo, std::min(PW, W + ow));
  }
  // Copies the plane's part inside the padded frame P (whose border is zero).
  template <typename T>
  void fill(const T* plane, int64_t W, T* P) const {
    for (int64_t r = r_lo; r < r_hi; ++r) {
      const T* __restrict src = plane + (r - off_h) * W + (c_lo - off_w);
      T* __restrict dst = P + r * PW + c_lo;
      for (int64_t c = 0; c < c_hi - c_lo; ++c) dst[c] = src[c];
    }
  }
};

template <typename T>
inline void zero_rows(T (*d)[kChunk], int rows, int col, int nt) {
  for (int j = 0; j < rows; ++j) std::fill(d[j] + col, d[j] + col + nt, T(0));
}

// The J x J windows of the runs [r0, r1) (nt tiles) through padded copies of their sample planes (plane(n) =
// x + n * nstride, of width W): d[i][j][m] for the chunk's tile m.
template <typename T, int J>
void gather_padded(const PadGeom& pg, const T* x, int64_t nstride, int64_t W, const Run* r0, const Run* r1, int nt,
                   T (*d)[J][kChunk]) {
  alignas(64) T P[kPadBuf];
  int32_t off[kChunk];  // tile m's window starts at P + off[m]
  const int64_t first = r0->n, planes = (r1 - 1)->n - first + 1, PHW = pg.PH * pg.PW;
  std::fill(P, P + planes * PHW, T(0));
  for (int64_t q = 0; q < planes; ++q) pg.fill(x + (first + q) * nstride, W, P + q * PHW);
  for (const Run* ru = r0; ru < r1; ++ru) {
    const int32_t base = int32_t((ru->n - first) * PHW + 4 * ru->th * pg.PW + 4 * ru->tw);
    for (int m = 0; m < ru->nt; ++m) off[ru->col + m] = base + 4 * m;
  }
  for (int i = 0; i < J; ++i)
    for (int j = 0; j < J; ++j) {
      const T* __restrict src = P + i * pg.PW + j;
      T* __restrict dst = d[i][j];
#pragma omp simd
      for (int m = 0; m < nt; ++m) dst[m] = src[off[m]];
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

// The input tiles of the runs [r0, r1) (nt <= kChunk tiles in all) for one channel: plane(n) = x + n * nstride,
// of (Hi, Wi); the 6x6 windows transformed to B^T d B, element e of the chunk's tile m to v[e * lde + m].
template <typename T>
void input_chunk(const Geom& g, const T* x, int64_t nstride, const Run* r0, const Run* r1, int nt, T* v, int64_t lde) {
  alignas(64) T d[6][6][kChunk];  // d[i][j][m]: element (i, j) of tile m
  alignas(64) T h[6][6][kChunk];  // h[i][b][m]: row i of tile m, transformed along the row
  const PadGeom pg(g.TH, g.TW, g.Hi, g.Wi, g.off_h, g.off_w, 6);
  if (pg.use) gather_padded<T, 6>(pg, x, nstride, g.Wi, r0, r1, nt, d);
  for (const Run* ru = pg.use ? r1 : r0; ru < r1; ++ru) {
    const int m = ru->nt, col = ru->col;
    const T* plane = x + ru->n * nstride;
    const int64_t ih0 = 4 * ru->th - g.off_h, iw0 = 4 * ru->tw - g.off_w;
    for (int i = 0; i < 6; ++i) {
      const int64_t ih = ih0 + i;
      if (ih < 0 || ih >= g.Hi) {
        zero_rows(d[i], 6, col, m);
        continue;
      }
      gather_row<T, 6>(plane + ih * g.Wi, g.Wi, iw0, m, d[i], col);
    }
  }
  for (int i = 0; i < 6; ++i)
    bt6(d[i][0], d[i][1], d[i][2], d[i][3], d[i][4], d[i][5], h[i][0], h[i][1], h[i][2], h[i][3], h[i][4], h[i][5], nt);
  for (int b = 0; b < 6; ++b)
    bt6(h[0][b], h[1][b], h[2][b], h[3][b], h[4][b], h[5][b], v + (0 * 6 + b) * lde, v + (1 * 6 + b) * lde,
        v + (2 * 6 + b) * lde, v + (3 * 6 + b) * lde, v + (4 * 6 + b) * lde, v + (5 * 6 + b) * lde, nt);
}

// The output tiles of the runs [r0, r1) (nt <= kChunk tiles in all) of one output channel: element e of the
// chunk's tile m at mt[e * lde + m] -> A^T M A + bias (then max(., 0) when relu, relu_fwd's formula),
// written into plane(n) = y + n * nstride of (Ho, Wo); the parts of edge tiles outside it are dropped.
template <typename T>
void output_chunk(const Geom& g, const T* mt, int64_t lde, const Run* r0, const Run* r1, int nt, T bias, T* y,
                  int64_t nstride, bool relu = false) {
  alignas(64) T t[6][4][kChunk];  // t[a][q][m]: row a of tile m, transformed along the row
  alignas(64) T o[4][4][kChunk];  // o[p][q][m]: output row p, column q of tile m
  alignas(64) T row[4 * kChunk];
  for (int a = 0; a < 6; ++a) {
    const T* r = mt + (a * 6) * lde;
    at4(r, r + lde, r + 2 * lde, r + 3 * lde, r + 4 * lde, r + 5 * lde, t[a][0], t[a][1], t[a][2], t[a][3], nt);
  }
  for (int q = 0; q < 4; ++q)
    at4(t[0][q], t[1][q], t[2][q], t[3][q], t[4][q], t[5][q], o[0][q], o[1][q], o[2][q], o[3][q], nt);
  // A chunk of whole small planes: the tiles go into a stack copy of those planes by per-tile offsets (no
  // per-run loop: a run is 2 tiles on an 8x8 plane), then each plane's valid part is copied out.
  const int64_t per = g.TH * g.TW, OW = 4 * g.TW, OHW = 4 * g.TH * OW;
  if (r0->th == 0 && r0->tw == 0 && nt % per == 0 && (nt / per) * OHW <= kPadBuf) {
    alignas(64) T O[kPadBuf];
    int32_t off[kChunk];
    for (int m = 0; m < nt; ++m) {
      const int64_t tt = m % per;
      off[m] = int32_t((m / per) * OHW + 4 * (tt / g.TW) * OW + 4 * (tt % g.TW));
    }
    for (int p = 0; p < 4; ++p)
      for (int q = 0; q < 4; ++q) {
        T* __restrict dst = O + p * OW + q;
        const T* __restrict src = o[p][q];
        for (int m = 0; m < nt; ++m) dst[off[m]] = src[m] + bias;
      }
    for (int64_t s = 0; s < nt / per; ++s) {
      T* plane = y + (r0->n + s) * nstride;
      for (int64_t r = 0; r < g.Ho; ++r) {
        const T* __restrict src = O + s * OHW + r * OW;
        T* __restrict dst = plane + r * g.Wo;
        if (relu)
          for (int64_t c = 0; c < g.Wo; ++c) dst[c] = src[c] < T(0) ? T(0) : src[c];
        else
          for (int64_t c = 0; c < g.Wo; ++c) dst[c] = src[c];
      }
    }
    return;
  }
  for (const Run* ru = r0; ru < r1; ++ru) {
    const int m = ru->nt, col = ru->col;
    T* plane = y + ru->n * nstride;
    const int64_t oh0 = 4 * ru->th, ow0 = 4 * ru->tw;
    const int64_t rows = std::min<int64_t>(4, g.Ho - oh0), cols = std::min<int64_t>(4 * m, g.Wo - ow0);
    for (int p = 0; p < rows; ++p) {
      T* dst = plane + (oh0 + p) * g.Wo + ow0;
      T* __restrict out = cols == 4 * m ? dst : row;
      const T* __restrict c0 = o[p][0] + col;
      const T* __restrict c1 = o[p][1] + col;
      const T* __restrict c2 = o[p][2] + col;
      const T* __restrict c3 = o[p][3] + col;
      for (int j = 0; j < m; ++j) {
        out[4 * j] = c0[j] + bias;
        out[4 * j + 1] = c1[j] + bias;
        out[4 * j + 2] = c2[j] + bias;
        out[4 * j + 3] = c3[j] + bias;
      }
      if (relu)
        for (int j = 0; j < 4 * m; ++j) out[j] = out[j] < T(0) ? T(0) : out[j];
      if (out == row) std::memcpy(dst, row, sizeof(T) * size_t(cols));
    }
  }
}

// The output-gradient tiles of the runs [r0, r1) (nt <= kChunk tiles in all) of one plane of dy: plane(n) =
// dy + n * nstride of (Ho, Wo); the 4x4 blocks (zeros outside the plane) transformed to A dY A^T, element e
// of tile m to v[e * lde + m].
template <typename T>
void grad_chunk(const Geom& g, const T* dy, int64_t nstride, const Run* r0, const Run* r1, int nt, T* v, int64_t lde) {
  alignas(64) T d[4][4][kChunk];  // d[p][q][m]: element (p, q) of tile m
  alignas(64) T z[4][6][kChunk];  // z[p][b][m]: row p of tile m, transformed along the row
  const PadGeom pg(g.TH, g.TW, g.Ho, g.Wo, 0, 0, 4);
  if (pg.use) {
    gather_padded<T, 4>(pg, dy, nstride, g.Wo, r0, r1, nt, d);
    r0 = r1;
  }
  for (const Run* ru = r0; ru < r1; ++ru) {
    const int m = ru->nt, col = ru->col;
    const T* plane = dy + ru->n * nstride;
    for (int p = 0; p < 4; ++p) {
      const int64_t oh = 4 * ru->th + p;
      if (oh >= g.Ho) {
        zero_rows(d[p], 4, col, m);
        continue;
      }
      gather_row<T, 4>(plane + oh * g.Wo, g.Wo, 4 * ru->tw, m, d[p], col);
    }
  }
  for (int p = 0; p < 4; ++p)
    a6(d[p][0], d[p][1], d[p][2], d[p][3], z[p][0], z[p][1], z[p][2], z[p][3], z[p][4], z[p][5], nt);
  for (int b = 0; b < 6; ++b)
    a6(z[0][b], z[1][b], z[2][b], z[3][b], v + (0 * 6 + b) * lde, v + (1 * 6 + b) * lde, v + (2 * 6 + b) * lde,
       v + (3 * 6 + b) * lde, v + (4 * 6 + b) * lde, v + (5 * 6 + b) * lde, nt);
}

}  // namespace ck::wino
