// CUDA twin of optim.cpp, in the same order: fused SGD / AdaGrad / RMSProp / Adam(W) steps (one grid-stride
// pass, each element read and written once, the per-element lines shared with the CPU through the CK_OPTIM_HD
// functions of optim.h), then the gradient checks and clipping. Launched on the caller's stream, nothing
// synchronised; grad_sumsq writes its result to device memory instead of returning it. nvcc contracts
// a*b+c into fma where g++ may not, so results can differ from the CPU in the last bits (tests allow 1e-6
// relative). Compiled for sm_80/sm_90; NOT YET RUN ON A GPU.
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/cuda_check.cuh"
#include "ops/optim.h"

namespace ck {

namespace {

// Which of optim.h's prep_grad<CLIP, L1> variants the coefficients need (the CPU's with_prep_flags test).
// On the GPU the choice is a uniform runtime switch inside one kernel rather than four kernels: these
// loops are bound by memory bandwidth, and four times fewer kernels keep the CI build time down.
template <typename T>
int prep_mode(const GradPrep<T>& c) {
  const bool clip = c.gscale != T(1) || c.gclip <= std::numeric_limits<T>::max();
  const bool l1 = c.l1 != T(0);
  return (clip ? 2 : 0) + (l1 ? 1 : 0);
}

template <typename T>
__device__ __forceinline__ T prep(int mode, T g, T p, const GradPrep<T>& c) {
  switch (mode) {
    case 3: return prep_grad<true, true>(g, p, c);
    case 2: return prep_grad<true, false>(g, p, c);
    case 1: return prep_grad<false, true>(g, p, c);
    default: return prep_grad<false, false>(g, p, c);
  }
}

#define CK_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// ---------------------------------------------------------------- SGD
// Momentum, first step and nesterov are uniform runtime flags: every thread takes the same branch.
template <typename T>
__global__ void sgd_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, T neg_lr, T mu,
                           T omd, bool momentum, bool first, bool nesterov, GradPrep<T> c, int mode) {
  CK_GRID_STRIDE(i, n) {
    const T pi = p[i];
    T d = prep(mode, g[i], pi, c);
    if (momentum) {
      const T b = first ? d : buf[i] * mu + omd * d;
      buf[i] = b;
      d = nesterov ? d + mu * b : b;
    }
    p[i] = pi + neg_lr * d;
  }
}

// ---------------------------------------------------------------- AdaGrad
template <typename T>
__global__ void adagrad_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ sum, T neg_clr,
                               T eps, GradPrep<T> c, int mode) {
  CK_GRID_STRIDE(i, n) {
    const T pi = p[i];
    const T d = prep(mode, g[i], pi, c);
    const T s = sum[i] + d * d;
    sum[i] = s;
    p[i] = pi + (neg_clr * d) / (sqrt(s) + eps);
  }
}

// ---------------------------------------------------------------- RMSProp
template <typename T>
__global__ void rmsprop_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ sq,
                               T* __restrict__ ga, T* __restrict__ buf, T neg_lr, T alpha, T oma, T oma_c, bool small,
                               T eps, T mu, GradPrep<T> c, int mode) {
  CK_GRID_STRIDE(i, n) {
    const T pi = p[i];
    const T d = prep(mode, g[i], pi, c);
    const T s = sq[i] * alpha + (oma * d) * d;
    sq[i] = s;
    T avg;
    if (ga != nullptr) {
      const T m = lerp(ga[i], d, oma, oma_c, small);
      ga[i] = m;
      avg = sqrt(s + (T(-1) * m) * m);
    } else {
      avg = sqrt(s);
    }
    avg = avg + eps;
    if (buf != nullptr) {
      const T b = buf[i] * mu + d / avg;
      buf[i] = b;
      p[i] = pi + neg_lr * b;
    } else {
      p[i] = pi + (neg_lr * d) / avg;
    }
  }
}

// ---------------------------------------------------------------- Adam / AdamW
template <typename T>
__global__ void adam_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                            T* __restrict__ v, T* __restrict__ vmax, T w, T omw, bool small, T beta2, T omb2,
                            T neg_step, T inv_bc2s, T eps, T decay, GradPrep<T> c, int mode) {
  CK_GRID_STRIDE(i, n) {
    const T p0 = p[i];
    const T d = prep(mode, g[i], p0, c);
    const T pi = p0 * decay;
    const T mi = lerp(m[i], d, w, omw, small);
    const T vi = v[i] * beta2 + (omb2 * d) * d;
    m[i] = mi;
    v[i] = vi;
    T vv = vi;
    if (vmax != nullptr) {
      vv = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vv;
    }
    p[i] = pi + (neg_step * mi) / (sqrt(vv) * inv_bc2s + eps);
  }
}

// ---------------------------------------------------------------- gradient checks and clipping
constexpr int kSumsqBlocks = 1024;  // fixed partial count: the result is deterministic for a given n

// Block-wide sum of a double held by every thread (blockDim.x == kThreads); thread 0 gets the total.
__device__ double block_sum(double v, double* shm) {
  shm[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shm[threadIdx.x] += shm[threadIdx.x + s];
    __syncthreads();
  }
  return shm[0];
}

// Pass 1: block b writes partial[b] = sum of g^2 (in double) and partial[kSumsqBlocks + b] = count of
// non-finite g over its grid-stride share.
template <typename T>
__global__ void sumsq_partial_kernel(int64_t n, const T* __restrict__ g, double* __restrict__ partial) {
  __shared__ double shm[cudak::kThreads];
  double s = 0.0, bad = 0.0;
  CK_GRID_STRIDE(i, n) {
    const double x = double(g[i]);
    s += x * x;
    bad += isfinite(g[i]) ? 0.0 : 1.0;
  }
  const double ts = block_sum(s, shm);
  __syncthreads();
  const double tb = block_sum(bad, shm);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = ts;
    partial[kSumsqBlocks + blockIdx.x] = tb;
  }
}

// Pass 2 (one block): out[0] = sum of the partial sums, out[1] = 1.0 if every g was finite, else 0.0.
__global__ void sumsq_final_kernel(int nparts, const double* __restrict__ partial, double* __restrict__ out) {
  __shared__ double shm[cudak::kThreads];
  double s = 0.0, bad = 0.0;
  for (int b = threadIdx.x; b < nparts; b += blockDim.x) {
    s += partial[b];
    bad += partial[kSumsqBlocks + b];
  }
  const double ts = block_sum(s, shm);
  __syncthreads();
  const double tb = block_sum(bad, shm);
  if (threadIdx.x == 0) {
    out[0] = ts;
    out[1] = tb == 0.0 ? 1.0 : 0.0;
  }
}

template <typename T>
__global__ void scale_clamp_kernel(int64_t n, T* __restrict__ g, T sc, T c) {
  CK_GRID_STRIDE(i, n) {
    const T x = g[i] * sc;
    g[i] = x < -c ? -c : (x > c ? c : x);
  }
}

// One block per row: the row's squared norm in double, then the row is scaled if its norm exceeds max_norm.
template <typename T>
__global__ void maxnorm_rows_kernel(int64_t rows, int64_t cols, T* __restrict__ p, double max_norm) {
  __shared__ double shm[cudak::kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* row = p + r * cols;
    double s = 0.0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += double(row[j]) * double(row[j]);
    const double norm = sqrt(block_sum(s, shm));
    __syncthreads();
    if (norm > max_norm) {
      const T f = T(max_norm / (norm + 1e-7));
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) row[j] = row[j] * f;
    }
  }
}

#undef CK_GRID_STRIDE

}  // namespace

template <typename T>
void sgd_step_cuda(int64_t n, T* p, const T* g, T* buf, const SgdArgs& a, const GradPrep<T>& prep,
                   CUstream_st* stream) {
  if (n == 0) return;
  const bool momentum = a.momentum != 0.0;
  sgd_kernel<T><<<cudak::blocks_for(n), cudak::kThreads, 0, stream>>>(
      n, p, g, buf, T(a.neg_lr), T(a.momentum), T(a.one_minus_dampening), momentum, a.first, a.nesterov, prep,
      prep_mode(prep));
  cudak::check_launch("sgd_step");
}

template <typename T>
void adagrad_step_cuda(int64_t n, T* p, const T* g, T* sum, const AdagradArgs& a, const GradPrep<T>& prep,
                       CUstream_st* stream) {
  if (n == 0) return;
  adagrad_kernel<T><<<cudak::blocks_for(n), cudak::kThreads, 0, stream>>>(n, p, g, sum, T(a.neg_clr), T(a.eps), prep,
                                                                           prep_mode(prep));
  cudak::check_launch("adagrad_step");
}

template <typename T>
void rmsprop_step_cuda(int64_t n, T* p, const T* g, T* square_avg, T* grad_avg, T* buf, const RmspropArgs& a,
                       const GradPrep<T>& prep, CUstream_st* stream) {
  if (n == 0) return;
  const T oma = T(1.0 - a.alpha), oma_c = T(1.0 - (1.0 - a.alpha));
  const bool small = (1.0 - a.alpha) < 0.5 && (1.0 - a.alpha) > -0.5;
  T* b = a.momentum > 0.0 ? buf : nullptr;
  rmsprop_kernel<T><<<cudak::blocks_for(n), cudak::kThreads, 0, stream>>>(
      n, p, g, square_avg, grad_avg, b, T(a.neg_lr), T(a.alpha), oma, oma_c, small, T(a.eps), T(a.momentum), prep,
      prep_mode(prep));
  cudak::check_launch("rmsprop_step");
}

template <typename T>
void adam_step_cuda(int64_t n, T* p, const T* g, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const AdamArgs& a,
                    const GradPrep<T>& prep, CUstream_st* stream) {
  if (n == 0) return;
  const bool small = (1.0 - a.beta1) < 0.5 && (1.0 - a.beta1) > -0.5;
  const T w = T(1.0 - a.beta1), omw = T(1.0 - (1.0 - a.beta1)), beta2 = T(a.beta2), omb2 = T(1.0 - a.beta2);
  const T neg_step = T(a.neg_step_size), inv_bc2s = T(1.0 / a.bc2_sqrt), eps = T(a.eps), decay = T(a.decay);
  adam_kernel<T><<<cudak::blocks_for(n), cudak::kThreads, 0, stream>>>(
      n, p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, w, omw, small, beta2, omb2, neg_step, inv_bc2s, eps, decay, prep,
      prep_mode(prep));
  cudak::check_launch("adam_step");
}

int64_t grad_sumsq_workspace_cuda() { return 2 * int64_t(kSumsqBlocks); }

template <typename T>
void grad_sumsq_cuda(int64_t n, const T* g, double* workspace, double* out, CUstream_st* stream) {
  const int64_t want = (n + cudak::kThreads - 1) / cudak::kThreads;
  const int nparts = static_cast<int>(want < kSumsqBlocks ? (want > 0 ? want : 1) : kSumsqBlocks);
  sumsq_partial_kernel<T><<<nparts, cudak::kThreads, 0, stream>>>(n, g, workspace);
  cudak::check_launch("grad_sumsq");
  sumsq_final_kernel<<<1, cudak::kThreads, 0, stream>>>(nparts, workspace, out);
  cudak::check_launch("grad_sumsq");
}

template <typename T>
void grad_scale_clamp_cuda(int64_t n, T* g, double scale, double clip, CUstream_st* stream) {
  if (n == 0) return;
  scale_clamp_kernel<T><<<cudak::blocks_for(n), cudak::kThreads, 0, stream>>>(n, g, T(scale), T(clip));
  cudak::check_launch("grad_scale_clamp");
}

template <typename T>
void maxnorm_rows_cuda(int64_t rows, int64_t cols, T* p, double max_norm, CUstream_st* stream) {
  if (rows == 0 || cols == 0) return;
  const unsigned blocks = static_cast<unsigned>(rows < 65535 * 32 ? rows : 65535 * 32);
  maxnorm_rows_kernel<T><<<blocks, cudak::kThreads, 0, stream>>>(rows, cols, p, max_norm);
  cudak::check_launch("maxnorm_rows");
}

#define CK_OPTIM_INSTANTIATE(T)                                                                                   \
  template void sgd_step_cuda<T>(int64_t, T*, const T*, T*, const SgdArgs&, const GradPrep<T>&, CUstream_st*);    \
  template void adagrad_step_cuda<T>(int64_t, T*, const T*, T*, const AdagradArgs&, const GradPrep<T>&,           \
                                     CUstream_st*);                                                               \
  template void rmsprop_step_cuda<T>(int64_t, T*, const T*, T*, T*, T*, const RmspropArgs&, const GradPrep<T>&,   \
                                     CUstream_st*);                                                               \
  template void adam_step_cuda<T>(int64_t, T*, const T*, T*, T*, T*, const AdamArgs&, const GradPrep<T>&,         \
                                  CUstream_st*);                                                                  \
  template void grad_sumsq_cuda<T>(int64_t, const T*, double*, double*, CUstream_st*);                            \
  template void grad_scale_clamp_cuda<T>(int64_t, T*, double, double, CUstream_st*);                              \
  template void maxnorm_rows_cuda<T>(int64_t, int64_t, T*, double, CUstream_st*);
CK_OPTIM_INSTANTIATE(float)
CK_OPTIM_INSTANTIATE(double)
#undef CK_OPTIM_INSTANTIATE

}  // namespace ck
