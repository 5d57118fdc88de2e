// 2-D max-pooling with stored argmax, PyTorch semantics: padded cells count as -inf; indices are int64,
// flat within each (n, c) plane (ih * W + iw); ties go to the first maximum in row-major window order;
// a NaN wins over any number (and a later NaN over an earlier one, as in PyTorch's CPU kernel).
#pragma once
#include <cstdint>
#include <vector>

struct CUstream_st;

namespace ck {

struct MaxPool2dParams {
  int64_t N, C, H, W, P, Q;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  bool ceil_mode;
};

// Output length of one pooled dimension, as torch's pooling_output_shape: floor((in + 2*pad - d*(k-1) - 1
// + (ceil_mode ? s-1 : 0)) / s) + 1, less one in ceil_mode when the last window would start in the right
// padding. Throws when the result is < 1. The only place either language computes this length.
int64_t pool_output_size(const char* op, const char* dim, int64_t in, int64_t k, int64_t s, int64_t pad, int64_t d,
                         bool ceil_mode);

MaxPool2dParams make_maxpool2d_params(const char* op, const std::vector<int64_t>& x_shape, int64_t kh, int64_t kw,
                                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                                      bool ceil_mode);

// x (N, C, H, W) -> y (N, C, P, Q), indices (N, C, P, Q) int64. Writes both (=).
template <typename T>
void maxpool2d_fwd_cpu(const MaxPool2dParams& p, const T* x, T* y, int64_t* indices);

// dx (N, C, H, W) = scatter of dy (N*C planes of PQ) through indices. Writes dx (=): zeroes it, then
// accumulates where windows overlap. Throws if an index lies outside its plane.
template <typename T>
void maxpool2d_bwd_cpu(int64_t planes, int64_t HW, int64_t PQ, const T* dy, const int64_t* indices, T* dx);

// CUDA twins (maxpool2d.cu, built when CNNKIT_WITH_CUDA): device pointers, launched on `stream` (cudaStream_t),
// not synchronised. The backward zeroes dx and scatters with atomicAdd; an index outside its plane is skipped
// (the CPU raises; reporting it would need a host sync).
template <typename T>
void maxpool2d_fwd_cuda(const MaxPool2dParams& p, const T* x, T* y, int64_t* indices, CUstream_st* stream);
template <typename T>
void maxpool2d_bwd_cuda(int64_t planes, int64_t HW, int64_t PQ, const T* dy, const int64_t* indices, T* dx,
                        CUstream_st* stream);

}  // namespace ck
