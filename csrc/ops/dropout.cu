// CUDA twin of dropout.cpp, in the same order. One thread per Philox block of 4 elements, with the CPU's
// stream layout (common/philox.h: block b = elements 4b..4b+3, word j for element 4b+j), the same threshold
// test and the same x * mask * scale product, so the mask and y equal the CPU's bit for bit. Launched on
// the caller's stream, nothing synchronised. Compiled for sm_80/sm_90.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_check.cuh"
#include "common/philox.h"
#include "ops/dropout.h"

namespace ck {

namespace {

// x, y, mask: (n,). Writes y and mask (=). thr <= 2^32, so the compare is done in 64 bits as on the CPU.
template <typename T>
__global__ void dropout_fwd_kernel(int64_t n, const T* __restrict__ x, uint64_t thr, T scale, uint64_t seed,
                                   uint64_t offset, T* __restrict__ y, uint8_t* __restrict__ mask) {
  const int64_t nblocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < nblocks; b += int64_t(gridDim.x) * blockDim.x) {
    const Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(b));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = b * 4 + j;
      if (i >= n) break;
      const uint8_t keep = static_cast<uint64_t>(r.v[j]) >= thr;
      mask[i] = keep;
      y[i] = x[i] * T(keep) * scale;
    }
  }
}

// dx = dy * (mask != 0) * scale. Writes dx (=).
template <typename T>
__global__ void dropout_bwd_kernel(int64_t n, const T* __restrict__ dy, const uint8_t* __restrict__ mask, T scale,
                                   T* __restrict__ dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = dy[i] * T(mask[i] != 0) * scale;
}

}  // namespace

template <typename T>
void dropout_fwd_cuda(int64_t n, const T* x, double p, uint64_t seed, uint64_t offset, T* y, uint8_t* mask,
                      CUstream_st* stream) {
  const uint64_t thr = dropout_threshold("dropout_fwd", p);
  const T scale = dropout_scale<T>(p);
  if (n == 0) return;
  dropout_fwd_kernel<T>
      <<<cudak::blocks_for((n + 3) / 4), cudak::kThreads, 0, stream>>>(n, x, thr, scale, seed, offset, y, mask);
  cudak::check_launch("dropout_fwd");
}

template <typename T>
void dropout_bwd_cuda(int64_t n, const T* dy, const uint8_t* mask, double p, T* dx, CUstream_st* stream) {
  dropout_threshold("dropout_bwd", p);
  const T scale = dropout_scale<T>(p);
  if (n == 0) return;
  dropout_bwd_kernel<T><<<cudak::blocks_for(n), cudak::kThreads, 0, stream>>>(n, dy, mask, scale, dx);
  cudak::check_launch("dropout_bwd");
}

template void dropout_fwd_cuda<float>(int64_t, const float*, double, uint64_t, uint64_t, float*, uint8_t*,
                                      CUstream_st*);
template void dropout_fwd_cuda<double>(int64_t, const double*, double, uint64_t, uint64_t, double*, uint8_t*,
                                       CUstream_st*);
template void dropout_bwd_cuda<float>(int64_t, const float*, const uint8_t*, double, float*, CUstream_st*);
template void dropout_bwd_cuda<double>(int64_t, const double*, const uint8_t*, double, double*, CUstream_st*);

}  // namespace ck
