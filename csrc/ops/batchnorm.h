// Batch normalization over (N, C, S) data: S is H*W for BatchNorm2d, L or 1 for BatchNorm1d (Ioffe & Szegedy
// 2015). The formulas are PyTorch's CPU ones, so outputs agree closely: y = x * alpha + beta with
// alpha = weight * invstd and beta = bias - mean * alpha; the backward uses sum(dy) and sum((x - mean) * dy).
#pragma once
#include <cstdint>

namespace ck {

// Per-channel mean and biased variance of x (N, C, S), accumulated in double. Writes mean, var (=).
template <typename T>
void batchnorm_stats_cpu(int64_t N, int64_t C, int64_t S, const T* x, T* mean, T* var);

// y[n, c, s] = x[n, c, s] * alpha[c] + beta[c]. Writes y (=); y may alias x.
template <typename T>
void channel_affine_cpu(int64_t N, int64_t C, int64_t S, const T* x, const T* alpha, const T* beta, T* y);

// Backward of y = (x - mean) * invstd * weight + bias. Per channel: sum_dy = sum(dy) and
// dotp = sum((x - mean) * dy) are written (=) to sum_dy and dotp (the bias and weight gradients are sum_dy and
// dotp * invstd). When dx is not null it is written (=): with batch statistics (train) the mean and invstd
// depend on x; with running statistics they are constants. weight may be null (affine=False).
template <typename T>
void batchnorm_bwd_cpu(int64_t N, int64_t C, int64_t S, const T* dy, const T* x, const T* mean, const T* invstd,
                       const T* weight, bool train, T* dx, double* sum_dy, double* dotp);

}  // namespace ck
