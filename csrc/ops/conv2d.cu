// CUDA twin of conv2d.cpp, in the same order: forward, backward-data, backward-weight, bias grad. Each pass
// is an implicit GEMM (no im2col buffer, no cuDNN): one tiled kernel, shared-memory tiles of 64x64 outputs
// with BK=16, each of 256 threads holding a 4x4 register tile, and a small "problem" struct per pass that
// says how to read an A or B element (the im2col gather happens in the tile load) and where a C element goes.
// No atomics: every output (or split-K partial, summed in a fixed order) is written by one thread, so results
// are deterministic. A straightforward first version, correctness over speed (no vector loads, no double
// buffering, int64 index math). Optional TF32 path (float32 only, off by default): the same tiles and split-K,
// with the inner product on tensor cores through nvcuda::wmma m16n16k8 (operands rounded to TF32 as they enter
// shared memory, float accumulation). Compiled for sm_80/sm_90.
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common/cuda_check.cuh"
#include "ops/conv2d.h"

namespace ck {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16, kTM = 4, kTN = 4;
constexpr int kGemmThreads = (kBM / kTM) * (kBN / kTN);  // 256

// The sizes every problem needs, as int64 (products can pass 2^31).
struct Dims {
  int64_t N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw, dh, dw, Cg, Kg, RS, CRS, PQ, HW;
};

Dims dims_of(const Conv2dParams& p) {
  Dims d{};
  // clang-format off: one line per group of fields
  d.N = p.N; d.C = p.C; d.H = p.H; d.W = p.W; d.K = p.K; d.R = p.R; d.S = p.S; d.P = p.P; d.Q = p.Q;
  d.sh = p.stride_h; d.sw = p.stride_w; d.ph = p.pad_h; d.pw = p.pad_w; d.dh = p.dil_h; d.dw = p.dil_w;
  d.Cg = p.Cg(); d.Kg = p.Kg(); d.RS = p.R * p.S; d.CRS = d.Cg * d.RS; d.PQ = p.P * p.Q; d.HW = p.H * p.W;
  // clang-format on
  return d;
}

// im2col element (crs, npq) of group g: x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw], 0 in the padding.
template <typename T>
__host__ __device__ __forceinline__ T im2col_at(const Dims& d, const T* __restrict__ x, int64_t g, int64_t crs,
                                                int64_t npq) {
  const int64_t c = crs / d.RS, rs = crs % d.RS, r = rs / d.S, s = rs % d.S;
  const int64_t n = npq / d.PQ, pq = npq % d.PQ, op = pq / d.Q, oq = pq % d.Q;
  const int64_t ih = op * d.sh - d.ph + r * d.dh, iw = oq * d.sw - d.pw + s * d.dw;
  if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) return T(0);
  return x[((n * d.C + g * d.Cg + c) * d.H + ih) * d.W + iw];
}

// Forward, per group g: y[n, k, pq] = sum_crs w[k, crs] * im2col[crs, (n, pq)] + b[k].
// GEMM (M, N, K) = (Kg, N*P*Q, Cg*R*S). Writes y (=).
template <typename T>
struct FwdProblem {
  Dims d;
  const T* x;
  const T* w;
  const T* b;
  T* y;
  __host__ __device__ T a(int64_t g, int64_t m, int64_t k) const { return w[(g * d.Kg + m) * d.CRS + k]; }
  __host__ __device__ T bmat(int64_t g, int64_t k, int64_t n) const { return im2col_at(d, x, g, k, n); }
  __host__ __device__ void store(int64_t g, int64_t m, int64_t n, T v, int64_t /*split*/) const {
    const int64_t img = n / d.PQ, pq = n % d.PQ, kk = g * d.Kg + m;
    y[(img * d.K + kk) * d.PQ + pq] = b ? v + b[kk] : v;  // the CPU also adds the bias after the GEMM
  }
};

// Backward-data, per group g: dx[n, c, h, w] = sum over (k, r, s) of w[k, c, r, s] * dy[n, k, p, q] with
// h = p*sh - ph + r*dh (and likewise w); a (k, r, s) whose p or q is not an integer in range contributes 0.
// GEMM (M, N, K) = (Cg, N*H*W, Kg*R*S): the gather form, so each dx element is written once (=), no atomics.
template <typename T>
struct BwdDataProblem {
  Dims d;
  const T* dy;
  const T* w;
  T* dx;
  __host__ __device__ T a(int64_t g, int64_t m, int64_t k) const {
    const int64_t kk = k / d.RS, rs = k % d.RS;
    return w[((g * d.Kg + kk) * d.Cg + m) * d.RS + rs];
  }
  __host__ __device__ T bmat(int64_t g, int64_t k, int64_t n) const {
    const int64_t kk = k / d.RS, rs = k % d.RS, r = rs / d.S, s = rs % d.S;
    const int64_t img = n / d.HW, hw = n % d.HW, h = hw / d.W, wc = hw % d.W;
    const int64_t th = h + d.ph - r * d.dh, tw = wc + d.pw - s * d.dw;
    if (th < 0 || tw < 0 || th % d.sh != 0 || tw % d.sw != 0) return T(0);
    const int64_t op = th / d.sh, oq = tw / d.sw;
    if (op >= d.P || oq >= d.Q) return T(0);
    return dy[((img * d.K + g * d.Kg + kk) * d.P + op) * d.Q + oq];
  }
  __host__ __device__ void store(int64_t g, int64_t m, int64_t n, T v, int64_t /*split*/) const {
    const int64_t img = n / d.HW, hw = n % d.HW;
    dx[(img * d.C + g * d.Cg + m) * d.HW + hw] = v;
  }
};

// Backward-weight, per group g: dw[k, crs] = sum over (n, pq) of dy[n, k, pq] * im2col[crs, (n, pq)].
// GEMM (M, N, K) = (Kg, Cg*R*S, N*P*Q). Writes dw (=), or accumulates (+=) when accumulate is set. The
// reduction dimension N*P*Q is long and the output small, so the GEMM is split along it (split-K): split s
// writes its partial sum to partial + s*K*CRS, and splits_reduce_kernel adds the partials in split order
// (deterministic). With one split, partial is null and the result goes straight to dw.
template <typename T>
struct BwdWeightProblem {
  Dims d;
  const T* dy;
  const T* x;
  T* dw;
  T* partial;
  bool accumulate;
  __host__ __device__ T a(int64_t g, int64_t m, int64_t k) const {
    const int64_t img = k / d.PQ, pq = k % d.PQ;
    return dy[(img * d.K + g * d.Kg + m) * d.PQ + pq];
  }
  __host__ __device__ T bmat(int64_t g, int64_t k, int64_t n) const { return im2col_at(d, x, g, n, k); }
  __host__ __device__ void store(int64_t g, int64_t m, int64_t n, T v, int64_t split) const {
    const int64_t i = (g * d.Kg + m) * d.CRS + n;
    if (partial) {
      partial[split * d.K * d.CRS + i] = v;
    } else {
      dw[i] = accumulate ? dw[i] + v : v;
    }
  }
};

// Loads the (BK x BM) A tile and the (BK x BN) B tile of reduction step k0 into shared memory, k-major
// (As[k * lda + m], Bs[k * ldb + n]), zero outside the problem; `cvt` maps each element on the way in (the
// identity, or rounding to TF32). Consecutive threads take consecutive k for A (contiguous along a weight /
// dy row) and consecutive n for B (contiguous output columns, mostly contiguous input).
template <typename T, typename Problem, typename Cvt>
__device__ __forceinline__ void load_tiles(const Problem& pr, T* As, int lda, T* Bs, int ldb, int64_t g, int64_t m0,
                                           int64_t n0, int64_t k0, int64_t kend, int64_t M, int64_t Nn, int tid,
                                           Cvt cvt) {
  for (int i = tid; i < kBM * kBK; i += kGemmThreads) {
    const int mm = i / kBK, kk = i % kBK;
    const int64_t m = m0 + mm, k = k0 + kk;
    As[kk * lda + mm] = (m < M && k < kend) ? cvt(pr.a(g, m, k)) : T(0);
  }
  for (int i = tid; i < kBK * kBN; i += kGemmThreads) {
    const int kk = i / kBN, nn = i % kBN;
    const int64_t k = k0 + kk, n = n0 + nn;
    Bs[kk * ldb + nn] = (k < kend && n < Nn) ? cvt(pr.bmat(g, k, n)) : T(0);
  }
}

struct Identity {
  template <typename T>
  __device__ __forceinline__ T operator()(T v) const {
    return v;
  }
};

// C[g] (M x Nn) = A[g] (M x Kk) * B[g] (Kk x Nn), elements read through the problem's a() and bmat() and
// written through store(). Block (x, y, z) = (column tile, row tile, split * groups + group); split s covers
// the reduction range [s * kchunk, (s + 1) * kchunk) (kchunk a multiple of kBK; one split covers all of Kk). A tile is
// kept k-major in shared memory (As[k][m]) so the inner product reads consecutive m; +1 padding avoids bank conflicts
// on the transposing store. Accumulation is in T, in k order within a tile, like a float32 GEMM on the CPU.
template <typename T, typename Problem>
__global__ void __launch_bounds__(kGemmThreads)
    igemm_kernel(Problem pr, int64_t M, int64_t Nn, int64_t Kk, int64_t groups, int64_t kchunk) {
  __shared__ T As[kBK][kBM + 1];
  __shared__ T Bs[kBK][kBN];
  const int64_t g = blockIdx.z % groups, split = blockIdx.z / groups;
  const int64_t kbegin = split * kchunk, kend = Kk < kbegin + kchunk ? Kk : kbegin + kchunk;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int tid = threadIdx.x, tx = tid % (kBN / kTN), ty = tid / (kBN / kTN);
  T acc[kTM][kTN];
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int j = 0; j < kTN; ++j) acc[i][j] = T(0);

  for (int64_t k0 = kbegin; k0 < kend; k0 += kBK) {
    load_tiles<T>(pr, &As[0][0], kBM + 1, &Bs[0][0], kBN, g, m0, n0, k0, kend, M, Nn, tid, Identity{});
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      T av[kTM], bv[kTN];
#pragma unroll
      for (int i = 0; i < kTM; ++i) av[i] = As[kk][ty * kTM + i];
#pragma unroll
      for (int j = 0; j < kTN; ++j) bv[j] = Bs[kk][tx + j * (kBN / kTN)];  // strided: conflict-free reads
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < kTN; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t m = m0 + ty * kTM + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t n = n0 + tx + j * (kBN / kTN);  // consecutive threads store consecutive n: coalesced
      if (n < Nn) pr.store(g, m, n, acc[i][j], split);
    }
  }
}

// ---- TF32 tensor-core variant (float32 only; cnnkit.cuda.set_tf32) ----
// The same block tile (64x64, BK = 16), grid, split-K and epilogue order as igemm_kernel, so the two are
// interchangeable per launch. The 8 warps form a 4 (m) x 2 (n) grid; each owns a 16x32 strip of C as two
// m16n16k8 float accumulators and does 2 x 2 mma per BK step. Operands are rounded to TF32 once, on the
// shared-memory store, with __float_to_tf32 (cvt.rna: round to nearest, ties away, 10 mantissa bits): the
// tensor core would otherwise drop the low 13 bits (truncation). Products of TF32 values are exact in
// float32 and the sums are float32, so an output differs from the exact sum of the exact products by at most
// about 2^-10 * sum|a_i b_i| (the rounding of both operands) plus the float32 accumulation error.
// The accumulators go through shared memory (Cs) to the problem's store(), so bias, scatter and split-K
// partials are handled exactly as in the float32 kernel; the order of the sums is fixed, so TF32 results
// are deterministic too (run to run on one GPU model; they can differ between GPU models).
namespace wmma = nvcuda::wmma;
constexpr int kWmmaM = 16, kWmmaN = 16, kWmmaK = 8;
constexpr int kWarpsM = kBM / kWmmaM, kWarpsN = kGemmThreads / 32 / kWarpsM;  // 4 x 2 warps
constexpr int kFragsN = kBN / kWarpsN / kWmmaN;                               // 2 accumulators per warp
// Leading dimensions: a multiple of 4 floats (wmma's rule for 32-bit elements); every fragment pointer
// (k in {0, 8}, m and n multiples of 16) is then 32-byte aligned. +4 halves the bank conflicts of the A
// tile's transposing store against +0.
constexpr int kLdT = kBM + 4;
static_assert(kBN == kBM && kWarpsM * kWarpsN * 32 == kGemmThreads && kFragsN * kWarpsN * kWmmaN == kBN &&
                  kBK % kWmmaK == 0 && kLdT % 4 == 0,
              "TF32 warp tiling must cover the block tile");

struct ToTf32 {
  __device__ __forceinline__ float operator()(float v) const { return wmma::__float_to_tf32(v); }
};

template <typename Problem>
__global__ void __launch_bounds__(kGemmThreads)
    igemm_tf32_kernel(Problem pr, int64_t M, int64_t Nn, int64_t Kk, int64_t groups, int64_t kchunk) {
  __shared__ __align__(32) float As[kBK * kLdT];
  __shared__ __align__(32) float Bs[kBK * kLdT];
  __shared__ __align__(32) float Cs[kBM * kLdT];
  const int64_t g = blockIdx.z % groups, split = blockIdx.z / groups;
  const int64_t kbegin = split * kchunk, kend = Kk < kbegin + kchunk ? Kk : kbegin + kchunk;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int tid = threadIdx.x, warp = tid / 32, wm = warp % kWarpsM, wn = warp / kWarpsM;
  wmma::fragment<wmma::accumulator, kWmmaM, kWmmaN, kWmmaK, float> acc[kFragsN];
#pragma unroll
  for (int j = 0; j < kFragsN; ++j) wmma::fill_fragment(acc[j], 0.0f);

  for (int64_t k0 = kbegin; k0 < kend; k0 += kBK) {
    load_tiles<float>(pr, As, kLdT, Bs, kLdT, g, m0, n0, k0, kend, M, Nn, tid, ToTf32{});
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += kWmmaK) {
      // A (m x k) is stored k-major, As[k * ld + m]: column-major for wmma. B (k x n), Bs[k * ld + n]: row-major.
      wmma::fragment<wmma::matrix_a, kWmmaM, kWmmaN, kWmmaK, wmma::precision::tf32, wmma::col_major> a;
      wmma::load_matrix_sync(a, As + kk * kLdT + wm * kWmmaM, kLdT);
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) {
        wmma::fragment<wmma::matrix_b, kWmmaM, kWmmaN, kWmmaK, wmma::precision::tf32, wmma::row_major> b;
        wmma::load_matrix_sync(b, Bs + kk * kLdT + (wn * kFragsN + j) * kWmmaN, kLdT);
        wmma::mma_sync(acc[j], a, b, acc[j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < kFragsN; ++j)
    wmma::store_matrix_sync(Cs + wm * kWmmaM * kLdT + (wn * kFragsN + j) * kWmmaN, acc[j], kLdT, wmma::mem_row_major);
  __syncthreads();
  for (int i = tid; i < kBM * kBN; i += kGemmThreads) {  // consecutive threads store consecutive n: coalesced
    const int mm = i / kBN, nn = i % kBN;
    const int64_t m = m0 + mm, n = n0 + nn;
    if (m < M && n < Nn) pr.store(g, m, n, Cs[mm * kLdT + nn], split);
  }
}

// Launches the float32/float64 kernel, or the TF32 one when tf32 is set and T is float (float64 never uses
// TF32: the flag is ignored). Both take the same grid.
template <typename T, typename Problem>
void launch_igemm(const char* op, const Problem& pr, int64_t groups, int64_t M, int64_t Nn, int64_t Kk,
                  CUstream_st* stream, bool tf32, int64_t splits = 1, int64_t kchunk = 0) {
  if (M == 0 || Nn == 0 || groups == 0) return;  // nothing to write; a grid of 0 blocks is an error
  const int64_t gx = (Nn + kBN - 1) / kBN, gy = (M + kBM - 1) / kBM;
  CK_CHECK(gx < (int64_t(1) << 31) && gy <= 65535 && groups * splits <= 65535, op,
           "problem too large for one CUDA launch (column tiles ", gx, ", row tiles ", gy, ", groups ", groups, ")");
  const dim3 grid(unsigned(gx), unsigned(gy), unsigned(groups * splits));
  const int64_t chunk = splits == 1 ? Kk : kchunk;
  if constexpr (std::is_same_v<T, float>) {
    if (tf32) {
      igemm_tf32_kernel<Problem><<<grid, kGemmThreads, 0, stream>>>(pr, M, Nn, Kk, groups, chunk);
      cudak::check_launch(op);
      return;
    }
  }
  igemm_kernel<T, Problem><<<grid, kGemmThreads, 0, stream>>>(pr, M, Nn, Kk, groups, chunk);
  cudak::check_launch(op);
}

// How many ways to split the weight pass's reduction: enough blocks to fill a large GPU (~4 per SM on 132 SMs)
// when the output has few tiles, but each split keeps at least 32 BK-steps of work, and the grid's z fits.
int64_t weight_splits(int64_t tiles, int64_t groups, int64_t Kk) {
  constexpr int64_t kTargetBlocks = 512, kMinSteps = 32, kMaxSplits = 64;
  int64_t s = (kTargetBlocks + tiles - 1) / tiles;
  s = std::min({s, kMaxSplits, std::max<int64_t>(1, Kk / (kMinSteps * kBK)), 65535 / groups});
  return std::max<int64_t>(s, 1);
}

// dw[i] = (accumulate ? dw[i] : 0) + sum over s of partial[s * size + i], in split order. Writes dw (=).
template <typename T>
__global__ void splits_reduce_kernel(int64_t size, int64_t splits, const T* __restrict__ partial, T* __restrict__ dw,
                                     bool accumulate) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < size; i += int64_t(gridDim.x) * blockDim.x) {
    T acc = partial[i];
    for (int64_t s = 1; s < splits; ++s) acc += partial[s * size + i];
    dw[i] = accumulate ? dw[i] + acc : acc;
  }
}

// db[k] = sum over n and pq of dy[n, k, pq], one block per k, summed in double (as the CPU does), in a fixed
// order for a given shape. Writes (=) or accumulates (+=).
template <typename T>
__global__ void bias_grad_kernel(int64_t N, int64_t K, int64_t PQ, const T* __restrict__ dy, T* __restrict__ db,
                                 bool accumulate) {
  __shared__ double shm[cudak::kThreads];
  for (int64_t k = blockIdx.x; k < K; k += gridDim.x) {
    double s = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const T* row = dy + (n * K + k) * PQ;
      for (int64_t j = threadIdx.x; j < PQ; j += blockDim.x) s += double(row[j]);
    }
    shm[threadIdx.x] = s;
    __syncthreads();
    for (int st = blockDim.x / 2; st > 0; st >>= 1) {
      if (threadIdx.x < st) shm[threadIdx.x] += shm[threadIdx.x + st];
      __syncthreads();
    }
    if (threadIdx.x == 0) db[k] = accumulate ? T(db[k] + shm[0]) : T(shm[0]);
    __syncthreads();
  }
}

}  // namespace

template <typename T>
void conv2d_fwd_cuda(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y, CUstream_st* stream, bool tf32) {
  if (p.N == 0) return;
  const Dims d = dims_of(p);
  launch_igemm<T>("conv2d_fwd", FwdProblem<T>{d, x, w, b, y}, p.groups, d.Kg, d.N * d.PQ, d.CRS, stream, tf32);
}

template <typename T>
void conv2d_bwd_data_cuda(const Conv2dParams& p, const T* dy, const T* w, T* dx, CUstream_st* stream, bool tf32) {
  if (p.N == 0) return;
  const Dims d = dims_of(p);
  launch_igemm<T>("conv2d_bwd_data", BwdDataProblem<T>{d, dy, w, dx}, p.groups, d.Cg, d.N * d.HW, d.Kg * d.RS, stream,
                  tf32);
}

template <typename T>
void conv2d_bwd_weight_cuda(const Conv2dParams& p, const T* dy, const T* x, T* dw, bool accumulate, CUstream_st* stream,
                            bool tf32) {
  const Dims d = dims_of(p);
  if (p.N == 0) {
    if (!accumulate)
      cudak::check_call("conv2d_bwd_weight", cudaMemsetAsync(dw, 0, sizeof(T) * size_t(d.K * d.CRS), stream),
                        "cudaMemsetAsync(dw)");
    return;
  }
  const char* op = "conv2d_bwd_weight";
  const int64_t Kk = d.N * d.PQ;
  const int64_t tiles = p.groups * ((d.Kg + kBM - 1) / kBM) * ((d.CRS + kBN - 1) / kBN);
  const int64_t splits = weight_splits(tiles, p.groups, Kk);
  if (splits == 1) {
    launch_igemm<T>(op, BwdWeightProblem<T>{d, dy, x, dw, nullptr, accumulate}, p.groups, d.Kg, d.CRS, Kk, stream,
                    tf32);
    return;
  }
  const int64_t kchunk = ((Kk + splits - 1) / splits + kBK - 1) / kBK * kBK;
  const int64_t size = d.K * d.CRS;
  // Scratch for the partial sums (stream-ordered: no synchronisation; freed even if a launch check throws).
  cudak::StreamScratch ws(op, sizeof(T) * size_t(splits * size), stream);
  T* partial = reinterpret_cast<T*>(ws.get());
  launch_igemm<T>(op, BwdWeightProblem<T>{d, dy, x, dw, partial, accumulate}, p.groups, d.Kg, d.CRS, Kk, stream, tf32,
                  splits, kchunk);
  splits_reduce_kernel<T>
      <<<cudak::blocks_for(size), cudak::kThreads, 0, stream>>>(size, splits, partial, dw, accumulate);
  cudak::check_launch(op);
  ws.free();
}

template <typename T>
void conv2d_bwd_bias_cuda(int64_t N, int64_t K, int64_t PQ, const T* dy, T* db, bool accumulate, CUstream_st* stream) {
  if (K == 0) return;
  const unsigned blocks = static_cast<unsigned>(K < 65535 * 32 ? K : 65535 * 32);  // the kernel loops over k
  bias_grad_kernel<T><<<blocks, cudak::kThreads, 0, stream>>>(N, K, PQ, dy, db, accumulate);
  cudak::check_launch("conv2d_bwd_bias");
}

#define CK_INSTANTIATE(T)                                                                                         \
  template void conv2d_fwd_cuda<T>(const Conv2dParams&, const T*, const T*, const T*, T*, CUstream_st*, bool);    \
  template void conv2d_bwd_data_cuda<T>(const Conv2dParams&, const T*, const T*, T*, CUstream_st*, bool);         \
  template void conv2d_bwd_weight_cuda<T>(const Conv2dParams&, const T*, const T*, T*, bool, CUstream_st*, bool); \
  template void conv2d_bwd_bias_cuda<T>(int64_t, int64_t, int64_t, const T*, T*, bool, CUstream_st*);
CK_INSTANTIATE(float)
CK_INSTANTIATE(double)
#undef CK_INSTANTIATE

}  // namespace ck
