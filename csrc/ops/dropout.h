// Inverted dropout (Srivastava et al. 2014). p is the probability of DROPPING a unit (PyTorch/Keras);
// kept units are scaled by 1/(1-p). The mask is a pure function of (seed, offset, element index)
// through Philox-4x32-10 (common/philox.h), identical at any thread count and on the GPU.
#pragma once
#include <cstdint>

struct CUstream_st;

namespace ck {

// Element i is kept iff its 32-bit Philox word u satisfies u >= threshold, threshold = ceil(p * 2^32),
// so P(keep) = 1 - threshold / 2^32. Checks p (throws for p outside [0, 1)).
uint64_t dropout_threshold(const char* op, double p);

// y = x * mask * scale, mask[i] = 1 if kept else 0; n elements. Writes y and mask (=). The product is
// taken as PyTorch takes it, so a dropped NaN or Inf still yields NaN (non-finite values are not hidden).
template <typename T>
void dropout_fwd_cpu(int64_t n, const T* x, double p, uint64_t seed, uint64_t offset, T* y, uint8_t* mask);

// dx = dy * mask * scale (a mask byte other than 0 counts as 1). Writes dx (=).
template <typename T>
void dropout_bwd_cpu(int64_t n, const T* dy, const uint8_t* mask, double p, T* dx);

// CUDA twins (dropout.cu, built when CNNKIT_WITH_CUDA): device pointers, launched on `stream`, not
// synchronised; the same mask and y as the CPU, bit for bit.
template <typename T>
void dropout_fwd_cuda(int64_t n, const T* x, double p, uint64_t seed, uint64_t offset, T* y, uint8_t* mask,
                      CUstream_st* stream);
template <typename T>
void dropout_bwd_cuda(int64_t n, const T* dy, const uint8_t* mask, double p, T* dx, CUstream_st* stream);

// The scale 1/(1-p) computed as PyTorch does it: in the tensor's dtype.
template <typename T>
inline T dropout_scale(double p) {
  return T(1) / T(1.0 - p);
}

}  // namespace ck
