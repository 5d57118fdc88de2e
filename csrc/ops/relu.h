// ReLU, PyTorch semantics: NaN propagates forward, and backward passes dy wherever y is not <= 0
// (torch's threshold_backward on the saved output).
#pragma once
#include <cstdint>

struct CUstream_st;

namespace ck {

// y = max(x, 0), NaN kept. Writes y (=); y may alias x (in place).
template <typename T>
void relu_fwd_cpu(int64_t n, const T* x, T* y);

// dx = dy where !(y <= 0), else 0. Writes dx (=); dx may alias dy.
template <typename T>
void relu_bwd_cpu(int64_t n, const T* dy, const T* y, T* dx);

// CUDA twins (relu.cu, built when CNNKIT_WITH_CUDA): device pointers, launched on `stream` (CUDA's
// cudaStream_t is CUstream_st*, declared here so host files need no CUDA headers).
template <typename T>
void relu_fwd_cuda(int64_t n, const T* x, T* y, CUstream_st* stream);
template <typename T>
void relu_bwd_cuda(int64_t n, const T* dy, const T* y, T* dx, CUstream_st* stream);

}  // namespace ck
