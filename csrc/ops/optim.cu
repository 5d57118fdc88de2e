// CUDA twin of optim.cpp, in the same order: fused SGD / AdaGrad / RMSProp / Adam(W) steps (one grid-stride
// pass, each element read and written once, the per-element lines shared with the CPU through the CK_OPTIM_HD
// functions of optim.h), then the gradient checks and clipping. Launched on the caller's stream, nothing
// synchronised; grad_sumsq writes its result to device memory instead of returning it. With the optimizer's
// control block (OptimCtl, optim.h) a step reads the finite flag, the norm and its step count on the device,
// so a training step needs no host sync; the block's counters move in ctl_finish_kernel only. nvcc contracts
// a*b+c into fma where g++ may not, so results can differ from the CPU in the last bits (tests allow 1e-6
// relative). Compiled for sm_80/sm_90.
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

// The step kernels' grid: at most kStepBlocks blocks, so that with a control block each thread's per-step
// scalars (two double pow for Adam) are computed once for several elements rather than once per element;
// 2048 x 256 threads still fill an H100/H200 (132 SMs x 2048 resident threads) twice over.
constexpr int64_t kStepBlocks = 2048;
inline unsigned step_blocks(int64_t n) {
  const unsigned b = cudak::blocks_for(n);
  return b < kStepBlocks ? b : static_cast<unsigned>(kStepBlocks);
}

// Reads the control block once per thread (see OptimCtl in optim.h): false when this step is skipped (a
// non-finite gradient: the thread writes nothing); else c.gscale gets the clip coefficient and t the step
// being taken. Without a block: true, and the host's scalars stand.
template <typename T>
__device__ __forceinline__ bool ctl_read(const OptimCtl& k, GradPrep<T>& c, double& t) {
  if (k.block == nullptr) return true;
  if (k.block[kCtlFinite] == 0.0) return false;
  if (k.clip_norm > 0.0) c.gscale = T(double(c.gscale) * clip_coef(k.clip_norm, k.block[kCtlSumsq]));
  t = k.block[kCtlGroup0 + kCtlPerGroup * k.group] + 1.0;
  return true;
}

// A control-block launch always takes the clipping variant of prep_grad: its coefficient is known only on the
// device, and with a coefficient of 1 and no value clip the variant gives the same bits as the plain one.
template <typename T>
int launch_mode(const GradPrep<T>& c, const OptimCtl& k) {
  return prep_mode(c) | (k.block != nullptr && k.clip_norm > 0.0 ? 2 : 0);
}

// ---------------------------------------------------------------- SGD
// Momentum, first step and nesterov are uniform runtime flags: every thread takes the same branch.
template <typename T>
__global__ void sgd_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, SgdArgs a,
                           GradPrep<T> c, int mode, OptimCtl k) {
  double t = 0.0;
  if (!ctl_read(k, c, t)) return;
  const bool momentum = a.momentum != 0.0, nesterov = a.nesterov;
  const bool first = k.block ? k.block[kCtlGroup0 + kCtlPerGroup * k.group + 1] != 0.0 : a.first;
  const T neg_lr = T(a.neg_lr), mu = T(a.momentum), omd = T(a.one_minus_dampening);
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
__global__ void adagrad_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ sum,
                               AdagradArgs a, GradPrep<T> c, int mode, OptimCtl k) {
  double t = 0.0;
  if (!ctl_read(k, c, t)) return;
  const T neg_clr = T(k.block ? -adagrad_clr(-a.neg_clr, a.lr_decay, t) : a.neg_clr), eps = T(a.eps);
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
                               T* __restrict__ ga, T* __restrict__ buf, RmspropArgs a, GradPrep<T> c, int mode,
                               OptimCtl k) {
  double t = 0.0;
  if (!ctl_read(k, c, t)) return;
  const T neg_lr = T(a.neg_lr), alpha = T(a.alpha), oma = T(1.0 - a.alpha), eps = T(a.eps), mu = T(a.momentum);
  const T oma_c = T(1.0 - (1.0 - a.alpha));
  const bool small = (1.0 - a.alpha) < 0.5 && (1.0 - a.alpha) > -0.5;
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
__global__ void adam_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                            T* __restrict__ vmax, AdamArgs a, GradPrep<T> c, int mode, OptimCtl k) {
  double t = 0.0;
  if (!ctl_read(k, c, t)) return;
  if (k.block) adam_scalars(-a.neg_step_size, a.beta1, a.beta2, t, &a.neg_step_size, &a.bc2_sqrt);
  const bool small = (1.0 - a.beta1) < 0.5 && (1.0 - a.beta1) > -0.5;
  const T w = T(1.0 - a.beta1), omw = T(1.0 - (1.0 - a.beta1)), beta2 = T(a.beta2), omb2 = T(1.0 - a.beta2);
  const T neg_step = T(a.neg_step_size), inv_bc2s = T(1.0 / a.bc2_sqrt), eps = T(a.eps), decay = T(a.decay);
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

// Pass 2 (one block): out[0] = sum of the partial sums, out[1] = 1.0 if every g was finite, else 0.0;
// accumulate: out[0] += the sum, out[1] = 0.0 if it was or if some g was not finite.
__global__ void sumsq_final_kernel(int nparts, const double* __restrict__ partial, double* __restrict__ out,
                                   bool accumulate) {
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
    const bool finite = tb == 0.0 && (!accumulate || out[1] != 0.0);
    out[0] = accumulate ? out[0] + ts : ts;
    out[1] = finite ? 1.0 : 0.0;
  }
}

template <typename T>
__global__ void scale_clamp_kernel(int64_t n, T* __restrict__ g, double scale, T c, OptimCtl k) {
  if (k.block != nullptr) {
    if (k.block[kCtlFinite] == 0.0) return;
    if (k.clip_norm > 0.0) scale *= clip_coef(k.clip_norm, k.block[kCtlSumsq]);
  }
  const T sc = T(scale);
  CK_GRID_STRIDE(i, n) {
    const T x = g[i] * sc;
    g[i] = x < -c ? -c : (x > c ? c : x);
  }
}

// One block per row: the row's squared norm in double, then the row is scaled if its norm exceeds max_norm.
template <typename T>
__global__ void maxnorm_rows_kernel(int64_t rows, int64_t cols, T* __restrict__ p, double max_norm,
                                    const double* __restrict__ ctl) {
  __shared__ double shm[cudak::kThreads];
  if (ctl != nullptr && ctl[kCtlFinite] == 0.0) return;  // uniform over the grid: no block stops at a barrier
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

// One thread: the control block's counters move once per optimizer step, after every group's kernels read them.
__global__ void ctl_finish_kernel(double* __restrict__ block, int64_t groups) {
  if (block[kCtlFinite] == 0.0) {
    block[kCtlSkipped] += 1.0;
    return;
  }
  for (int64_t gi = 0; gi < groups; ++gi) {
    block[kCtlGroup0 + kCtlPerGroup * gi] += 1.0;
    block[kCtlGroup0 + kCtlPerGroup * gi + 1] = 0.0;
  }
}

#undef CK_GRID_STRIDE

}  // namespace

template <typename T>
void sgd_step_cuda(int64_t n, T* p, const T* g, T* buf, const SgdArgs& a, const GradPrep<T>& prep, CUstream_st* stream,
                   const OptimCtl& ctl) {
  if (n == 0) return;
  sgd_kernel<T><<<step_blocks(n), cudak::kThreads, 0, stream>>>(n, p, g, buf, a, prep, launch_mode(prep, ctl), ctl);
  cudak::check_launch("sgd_step");
}

template <typename T>
void adagrad_step_cuda(int64_t n, T* p, const T* g, T* sum, const AdagradArgs& a, const GradPrep<T>& prep,
                       CUstream_st* stream, const OptimCtl& ctl) {
  if (n == 0) return;
  adagrad_kernel<T><<<step_blocks(n), cudak::kThreads, 0, stream>>>(n, p, g, sum, a, prep, launch_mode(prep, ctl), ctl);
  cudak::check_launch("adagrad_step");
}

template <typename T>
void rmsprop_step_cuda(int64_t n, T* p, const T* g, T* square_avg, T* grad_avg, T* buf, const RmspropArgs& a,
                       const GradPrep<T>& prep, CUstream_st* stream, const OptimCtl& ctl) {
  if (n == 0) return;
  T* b = a.momentum > 0.0 ? buf : nullptr;
  rmsprop_kernel<T><<<step_blocks(n), cudak::kThreads, 0, stream>>>(n, p, g, square_avg, grad_avg, b, a, prep,
                                                                    launch_mode(prep, ctl), ctl);
  cudak::check_launch("rmsprop_step");
}

template <typename T>
void adam_step_cuda(int64_t n, T* p, const T* g, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const AdamArgs& a,
                    const GradPrep<T>& prep, CUstream_st* stream, const OptimCtl& ctl) {
  if (n == 0) return;
  adam_kernel<T><<<step_blocks(n), cudak::kThreads, 0, stream>>>(n, p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, a, prep,
                                                                 launch_mode(prep, ctl), ctl);
  cudak::check_launch("adam_step");
}

int64_t grad_sumsq_workspace_cuda() { return 2 * int64_t(kSumsqBlocks); }

template <typename T>
void grad_sumsq_cuda(int64_t n, const T* g, double* workspace, double* out, CUstream_st* stream, bool accumulate) {
  const int64_t want = (n + cudak::kThreads - 1) / cudak::kThreads;
  const int nparts = static_cast<int>(want < kSumsqBlocks ? (want > 0 ? want : 1) : kSumsqBlocks);
  sumsq_partial_kernel<T><<<nparts, cudak::kThreads, 0, stream>>>(n, g, workspace);
  cudak::check_launch("grad_sumsq");
  sumsq_final_kernel<<<1, cudak::kThreads, 0, stream>>>(nparts, workspace, out, accumulate);
  cudak::check_launch("grad_sumsq");
}

template <typename T>
void grad_scale_clamp_cuda(int64_t n, T* g, double scale, double clip, CUstream_st* stream, const OptimCtl& ctl) {
  if (n == 0) return;
  scale_clamp_kernel<T><<<cudak::blocks_for(n), cudak::kThreads, 0, stream>>>(n, g, scale, T(clip), ctl);
  cudak::check_launch("grad_scale_clamp");
}

template <typename T>
void maxnorm_rows_cuda(int64_t rows, int64_t cols, T* p, double max_norm, CUstream_st* stream,
                       const double* ctl_block) {
  if (rows == 0 || cols == 0) return;
  const unsigned blocks = static_cast<unsigned>(rows < 65535 * 32 ? rows : 65535 * 32);
  maxnorm_rows_kernel<T><<<blocks, cudak::kThreads, 0, stream>>>(rows, cols, p, max_norm, ctl_block);
  cudak::check_launch("maxnorm_rows");
}

void optim_ctl_finish_cuda(double* block, int64_t groups, CUstream_st* stream) {
  ctl_finish_kernel<<<1, 1, 0, stream>>>(block, groups);
  cudak::check_launch("optim_ctl_finish");
}

#define CK_OPTIM_INSTANTIATE(T)                                                                                       \
  template void sgd_step_cuda<T>(int64_t, T*, const T*, T*, const SgdArgs&, const GradPrep<T>&, CUstream_st*,         \
                                 const OptimCtl&);                                                                    \
  template void adagrad_step_cuda<T>(int64_t, T*, const T*, T*, const AdagradArgs&, const GradPrep<T>&, CUstream_st*, \
                                     const OptimCtl&);                                                                \
  template void rmsprop_step_cuda<T>(int64_t, T*, const T*, T*, T*, T*, const RmspropArgs&, const GradPrep<T>&,       \
                                     CUstream_st*, const OptimCtl&);                                                  \
  template void adam_step_cuda<T>(int64_t, T*, const T*, T*, T*, T*, const AdamArgs&, const GradPrep<T>&,             \
                                  CUstream_st*, const OptimCtl&);                                                     \
  template void grad_sumsq_cuda<T>(int64_t, const T*, double*, double*, CUstream_st*, bool);                          \
  template void grad_scale_clamp_cuda<T>(int64_t, T*, double, double, CUstream_st*, const OptimCtl&);                 \
  template void maxnorm_rows_cuda<T>(int64_t, int64_t, T*, double, CUstream_st*, const double*);
CK_OPTIM_INSTANTIATE(float)
CK_OPTIM_INSTANTIATE(double)
#undef CK_OPTIM_INSTANTIATE

}  // namespace ck
