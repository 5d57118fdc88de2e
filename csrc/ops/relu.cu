// CUDA twin of relu.cpp, in the same order. Raw device pointers, launched on the caller's stream (CuPy's
// current stream); nothing is synchronised here. Compiled for sm_80 and sm_90; it has not yet run on a GPU
// (the CUDA issue adds the Python entry points and the CPU-vs-CUDA tests).
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_check.cuh"
#include "ops/relu.h"

namespace ck {

namespace {

template <typename T>
__global__ void relu_fwd_kernel(int64_t n, const T* __restrict__ x, T* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = x[i] < T(0) ? T(0) : x[i];
}

template <typename T>
__global__ void relu_bwd_kernel(int64_t n, const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = y[i] <= T(0) ? T(0) : dy[i];
}

}  // namespace

template <typename T>
void relu_fwd_cuda(int64_t n, const T* x, T* y, cudaStream_t stream) {
  if (n == 0) return;
  relu_fwd_kernel<T><<<cudak::blocks_for(n), cudak::kThreads, 0, stream>>>(n, x, y);
  cudak::check_launch("relu_fwd");
}

template <typename T>
void relu_bwd_cuda(int64_t n, const T* dy, const T* y, T* dx, cudaStream_t stream) {
  if (n == 0) return;
  relu_bwd_kernel<T><<<cudak::blocks_for(n), cudak::kThreads, 0, stream>>>(n, dy, y, dx);
  cudak::check_launch("relu_bwd");
}

template void relu_fwd_cuda<float>(int64_t, const float*, float*, cudaStream_t);
template void relu_fwd_cuda<double>(int64_t, const double*, double*, cudaStream_t);
template void relu_bwd_cuda<float>(int64_t, const float*, const float*, float*, cudaStream_t);
template void relu_bwd_cuda<double>(int64_t, const double*, const double*, double*, cudaStream_t);

}  // namespace ck
