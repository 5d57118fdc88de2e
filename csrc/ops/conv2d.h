// 2-D convolution (cross-correlation, as in PyTorch): forward, backward-data, backward-weight, bias grad.
// x (N, C, H, W), w (K, C/groups, R, S), b (K,), y (N, K, P, Q) with
// P = floor((H + 2*pad_h - dil_h*(R-1) - 1) / stride_h) + 1, and likewise Q.
#pragma once
#include <cstdint>
#include <vector>

struct CUstream_st;

namespace ck {

struct Conv2dParams {
  int64_t N, C, H, W;  // input
  int64_t K, R, S;     // weight: K filters of (C/groups, R, S)
  int64_t P, Q;        // output plane
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
  int64_t Cg() const { return C / groups; }
  int64_t Kg() const { return K / groups; }
};

// Validates shapes and hyperparameters (throws std::invalid_argument naming `op`) and computes P, Q.
Conv2dParams make_conv2d_params(const char* op, const std::vector<int64_t>& x_shape,
                                const std::vector<int64_t>& w_shape, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups);

// y = conv(x, w) + b, then max(y, 0) when relu (the fused Conv2d + ReLU epilogue; NaN propagates). b may be
// null. Writes y (=).
template <typename T>
void conv2d_fwd_cpu(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y, bool relu = false);

// dx = conv_transpose(dy, w). Writes dx (=).
template <typename T>
void conv2d_bwd_data_cpu(const Conv2dParams& p, const T* dy, const T* w, T* dx);

// dw = sum_n dy[n] (x) im2col(x[n]). Writes dw (=), or accumulates (+=) when accumulate is true.
template <typename T>
void conv2d_bwd_weight_cpu(const Conv2dParams& p, const T* dy, const T* x, T* dw, bool accumulate);

// db[k] = sum over n, p, q of dy[n, k, p, q]; dy is (N, K, PQ). Writes (=) or accumulates (+=).
template <typename T>
void conv2d_bwd_bias_cpu(int64_t N, int64_t K, int64_t PQ, const T* dy, T* db, bool accumulate);

// CUDA twins (conv2d.cu, built when CNNKIT_WITH_CUDA): implicit-GEMM kernels on device pointers, launched
// on `stream` (cudaStream_t), not synchronised. Same write/accumulate semantics as the CPU versions.
// tf32: for float, multiply on tensor cores with operands rounded to TF32 (10 mantissa bits), accumulating in
// float (error about 2^-10 * sum|a_i b_i|); ignored for double. Off by default, as cnnkit.cuda.get_tf32().
template <typename T>
void conv2d_fwd_cuda(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y, CUstream_st* stream,
                     bool tf32 = false);
template <typename T>
void conv2d_bwd_data_cuda(const Conv2dParams& p, const T* dy, const T* w, T* dx, CUstream_st* stream,
                          bool tf32 = false);
template <typename T>
void conv2d_bwd_weight_cuda(const Conv2dParams& p, const T* dy, const T* x, T* dw, bool accumulate, CUstream_st* stream,
                            bool tf32 = false);
template <typename T>
void conv2d_bwd_bias_cuda(int64_t N, int64_t K, int64_t PQ, const T* dy, T* db, bool accumulate, CUstream_st* stream);

}  // namespace ck
