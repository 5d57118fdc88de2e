// CUDA twin of maxpool2d.cpp, in the same order: forward with argmax, backward scatter. Raw device pointers,
// launched on the caller's stream (CuPy's current stream), nothing synchronised. One thread per output
// element walks its window exactly as the CPU's general loop (torch's cpu_max_pool), so values and indices
// equal the CPU's bit for bit. Compiled for sm_80/sm_90.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_check.cuh"
#include "ops/maxpool2d.h"

namespace ck {

namespace {

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Candidate v at flat index i replaces the running max when it is larger or NaN (the CPU's take()).
template <typename T>
__device__ __forceinline__ void take(T v, int64_t i, T& m, int64_t& mi) {
  const bool better = (v > m) || isnan(v);
  m = better ? v : m;
  mi = better ? i : mi;
}

// x (planes, H, W) -> y, indices (planes, P, Q). Writes both (=). The CPU's 2x2 fast path gives the same
// results as this general walk (it starts from the first tap instead of -inf, which picks the same element).
template <typename T>
__global__ void maxpool2d_fwd_kernel(MaxPool2dParams p, const T* __restrict__ x, T* __restrict__ y,
                                     int64_t* __restrict__ ind) {
  const int64_t PQ = p.P * p.Q, HW = p.H * p.W, total = p.N * p.C * PQ;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pl = o / PQ, r = o % PQ, op = r / p.Q, oq = r % p.Q;
    const T* xp = x + pl * HW;
    int64_t ih0 = op * p.stride_h - p.pad_h;
    const int64_t ih1 = imin(ih0 + (p.kernel_h - 1) * p.dil_h + 1, p.H);
    while (ih0 < 0) ih0 += p.dil_h;
    int64_t iw0 = oq * p.stride_w - p.pad_w;
    const int64_t iw1 = imin(iw0 + (p.kernel_w - 1) * p.dil_w + 1, p.W);
    while (iw0 < 0) iw0 += p.dil_w;
    T m = -INFINITY;
    int64_t mi = ih0 * p.W + iw0;
    for (int64_t ih = ih0; ih < ih1; ih += p.dil_h)
      for (int64_t iw = iw0; iw < iw1; iw += p.dil_w) take(xp[ih * p.W + iw], ih * p.W + iw, m, mi);
    y[o] = m;
    ind[o] = mi;
  }
}

// dx (planes, HW) += dy (planes, PQ) scattered through indices; dx was zeroed first. atomicAdd (double
// needs sm_60+): where windows overlap, the order of the adds, and so the last bit of a float sum of two or
// more gradients, is not deterministic. The backward has no pooling geometry (only dy, indices, x_shape), so
// a deterministic gather over the windows covering each cell is not possible with this signature.
// Indices outside [0, HW) are skipped: the CPU raises for them, but reporting would need a host sync.
template <typename T>
__global__ void maxpool2d_bwd_kernel(int64_t planes, int64_t HW, int64_t PQ, const T* __restrict__ dy,
                                     const int64_t* __restrict__ ind, T* __restrict__ dx) {
  const int64_t total = planes * PQ;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = ind[o];
    if (i < 0 || i >= HW) continue;
    atomicAdd(dx + (o / PQ) * HW + i, dy[o]);
  }
}

}  // namespace

template <typename T>
void maxpool2d_fwd_cuda(const MaxPool2dParams& p, const T* x, T* y, int64_t* indices, CUstream_st* stream) {
  const int64_t total = p.N * p.C * p.P * p.Q;
  if (total == 0) return;
  maxpool2d_fwd_kernel<T><<<cudak::blocks_for(total), cudak::kThreads, 0, stream>>>(p, x, y, indices);
  cudak::check_launch("maxpool2d_fwd");
}

template <typename T>
void maxpool2d_bwd_cuda(int64_t planes, int64_t HW, int64_t PQ, const T* dy, const int64_t* indices, T* dx,
                        CUstream_st* stream) {
  if (planes * HW == 0) return;
  cudak::check_call("maxpool2d_bwd", cudaMemsetAsync(dx, 0, sizeof(T) * size_t(planes * HW), stream),
                    "cudaMemsetAsync(dx)");
  if (planes * PQ == 0) return;
  maxpool2d_bwd_kernel<T>
      <<<cudak::blocks_for(planes * PQ), cudak::kThreads, 0, stream>>>(planes, HW, PQ, dy, indices, dx);
  cudak::check_launch("maxpool2d_bwd");
}

#define CK_INSTANTIATE(T)                                                                            \
  template void maxpool2d_fwd_cuda<T>(const MaxPool2dParams&, const T*, T*, int64_t*, CUstream_st*); \
  template void maxpool2d_bwd_cuda<T>(int64_t, int64_t, int64_t, const T*, const int64_t*, T*, CUstream_st*);
CK_INSTANTIATE(float)
CK_INSTANTIATE(double)
#undef CK_INSTANTIATE

}  // namespace ck
