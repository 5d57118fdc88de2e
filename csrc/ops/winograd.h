// Winograd F(4x4, 3x3) convolution on the CPU (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
// Networks"): each 4x4 block of output is A^T [(G g G^T) . (B^T d B)] A for the 6x6 input tile d under it,
// so the 36 element-wise products of all tiles and channels become 36 GEMMs over channels, with 4x fewer
// multiplications than direct (im2col) convolution. For 3x3 kernels, stride 1, dilation 1; any padding,
// any groups, float and double. Same arguments and write/accumulate semantics as the conv2d_*_cpu
// functions of ops/conv2d.h, which they replace when cnnkit's conv algorithm is "winograd".
#pragma once
#include "ops/conv2d.h"

namespace ck {

// Whether the Winograd kernels can compute this convolution (3x3 kernel, stride 1, dilation 1).
bool winograd_applies(const Conv2dParams& p);

// Throws std::invalid_argument naming `op` and the reason when winograd_applies(p) is false.
void check_winograd(const char* op, const Conv2dParams& p);

// y = conv(x, w) + b. b may be null. Writes y (=).
template <typename T>
void conv2d_fwd_winograd_cpu(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y, bool relu = false);

// dx = conv_transpose(dy, w): a Winograd forward pass over dy with the filters rotated by 180 degrees and
// their in/out channels swapped. Writes dx (=).
template <typename T>
void conv2d_bwd_data_winograd_cpu(const Conv2dParams& p, const T* dy, const T* w, T* dx);

// dw = sum over tiles of G^T [(A dY A^T) . (B^T X B)] G. Writes dw (=), or accumulates (+=) when accumulate
// is true. Deterministic for a given thread count (per-thread partial sums added in thread order).
template <typename T>
void conv2d_bwd_weight_winograd_cpu(const Conv2dParams& p, const T* dy, const T* x, T* dw, bool accumulate);

}  // namespace ck
