// Optimizer steps as fused one-pass kernels over flat buffers (one buffer holds every parameter of a
// group), with torch.optim's update rules, defaults and arithmetic order (torch/optim/{sgd,adagrad,
// rmsprop,adam}.py, the single-tensor path), so float64 agrees with torch to ~1e-15 per step.
// The per-element math is in CK_OPTIM_HD inline functions below so the CUDA twin (optim.cu) runs the same
// lines; the per-step scalars (bias corrections, decayed lr) are computed once on the host, in Python,
// exactly as torch computes them, and cast to T here as torch casts a Python scalar to the tensor dtype.
#pragma once
#include <cmath>
#include <cstdint>

struct CUstream_st;

#if defined(__CUDACC__)
#define CK_OPTIM_HD __host__ __device__  // not CK_HD: philox.h defines that one with inline
#else
#define CK_OPTIM_HD
#endif

namespace ck {

// What every rule does to the raw gradient first, in this order: g*gscale (clip by global norm, the
// scale computed from one norm pass), clamp to [-gclip, gclip] (clip by value), + weight_decay * p
// (coupled L2), + l1 * sign(p) (L1 / elastic net). gscale = 1, gclip = inf, wd = l1 = 0 are identities.
template <typename T>
struct GradPrep {
  T gscale, gclip, wd, l1;
};

// CLIP and L1 are compile-time switches so the common path (no clipping, no L1) spends no instructions on
// them: Adam's loop is close to compute-bound on one core (its divider), so every op counts.
template <bool CLIP, bool L1, typename T>
CK_OPTIM_HD inline T prep_grad(T g, T p, const GradPrep<T>& c) {
  if constexpr (CLIP) {
    g = g * c.gscale;
    g = g < -c.gclip ? -c.gclip : (g > c.gclip ? c.gclip : g);
  }
  g = g + c.wd * p;
  if constexpr (L1) {
    const T s = T(p > T(0)) - T(p < T(0));  // sign(p), 0 at 0 (torch.sign)
    g = g + c.l1 * s;
  }
  return g;
}

// torch.lerp: start + w * (end - start) for |w| < 0.5, else end - (end - start) * (1 - w).
template <typename T>
CK_OPTIM_HD inline T lerp(T start, T end, T w, T one_minus_w, bool small) {
  return small ? start + w * (end - start) : end - (end - start) * one_minus_w;
}

// ---- SGD (momentum, dampening, nesterov). v = mu*v + (1-dampening)*g; on the first step v = g. ----
struct SgdArgs {
  double neg_lr, momentum, one_minus_dampening;
  bool nesterov, first;  // first: the momentum buffer is initialised to g (torch: buf = grad.clone())
};
// p, g, buf: (n,). Writes p and buf (=); g is read only. buf may be null when momentum == 0.
template <typename T>
void sgd_step_cpu(int64_t n, T* p, const T* g, T* buf, const SgdArgs& a, const GradPrep<T>& prep);

// ---- AdaGrad. clr = lr / (1 + (step - 1) * lr_decay) is computed on the host. ----
struct AdagradArgs {
  double neg_clr, eps;
};
// p, g, sum: (n,). Writes p and sum (=).
template <typename T>
void adagrad_step_cpu(int64_t n, T* p, const T* g, T* sum, const AdagradArgs& a, const GradPrep<T>& prep);

// ---- RMSProp (centered, momentum). eps is added outside the sqrt. ----
struct RmspropArgs {
  double neg_lr, alpha, eps, momentum;
};
// p, g, square_avg: (n,); grad_avg (centered) and buf (momentum > 0) may be null. Writes p and state (=).
template <typename T>
void rmsprop_step_cpu(int64_t n, T* p, const T* g, T* square_avg, T* grad_avg, T* buf, const RmspropArgs& a,
                      const GradPrep<T>& prep);

// ---- Adam / AdamW (amsgrad). neg_step_size = -lr / (1 - beta1^t), bc2_sqrt = (1 - beta2^t)^0.5 and
// decay = 1 - lr * weight_decay (AdamW; 1 for Adam, whose coupled decay goes through prep.wd).
// One deviation from torch's order: sqrt(v) / bc2_sqrt is computed as sqrt(v) * (1 / bc2_sqrt) (the
// reciprocal taken once on the host), which can differ in the last bit. Two vector divisions and a square
// root per element made the divider this loop's bottleneck on one core; now it is one division. ----
struct AdamArgs {
  double beta1, beta2, eps, neg_step_size, bc2_sqrt, decay;  // bc2_sqrt: the kernel uses 1 / bc2_sqrt
};
// p, g, exp_avg, exp_avg_sq: (n,); max_exp_avg_sq (amsgrad) may be null. Writes p and state (=).
template <typename T>
void adam_step_cpu(int64_t n, T* p, const T* g, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const AdamArgs& a,
                   const GradPrep<T>& prep);

// ---- Gradient checks and clipping over a flat gradient buffer ----
// One read-only pass: returns sum(g^2) accumulated in double and sets *finite = every g is finite.
template <typename T>
double grad_sumsq_cpu(int64_t n, const T* g, bool* finite);

// g = clamp(g * scale, -clip, clip) in place, one pass (clip by global norm and by value). Writes g (=).
template <typename T>
void grad_scale_clamp_cpu(int64_t n, T* g, double scale, double clip);

// Max-norm constraint (torch.renorm(p, 2, 0, max_norm)): each of the `rows` rows of p (rows, cols) is one
// unit's incoming weight vector; a row whose L2 norm exceeds max_norm is scaled by max_norm / (norm + 1e-7).
// Writes p in place (=).
template <typename T>
void maxnorm_rows_cpu(int64_t rows, int64_t cols, T* p, double max_norm);

// ---- CUDA twins (optim.cu, built when CNNKIT_WITH_CUDA): device pointers, launched on `stream`, not
// synchronised. Same arguments and in-place semantics as the CPU versions above.
template <typename T>
void sgd_step_cuda(int64_t n, T* p, const T* g, T* buf, const SgdArgs& a, const GradPrep<T>& prep,
                   CUstream_st* stream);
template <typename T>
void adagrad_step_cuda(int64_t n, T* p, const T* g, T* sum, const AdagradArgs& a, const GradPrep<T>& prep,
                       CUstream_st* stream);
template <typename T>
void rmsprop_step_cuda(int64_t n, T* p, const T* g, T* square_avg, T* grad_avg, T* buf, const RmspropArgs& a,
                       const GradPrep<T>& prep, CUstream_st* stream);
template <typename T>
void adam_step_cuda(int64_t n, T* p, const T* g, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const AdamArgs& a,
                    const GradPrep<T>& prep, CUstream_st* stream);
// Doubles of device scratch grad_sumsq_cuda needs (fixed, independent of n).
int64_t grad_sumsq_workspace_cuda();
// Writes out[0] = sum(g^2) (accumulated in double, deterministic for a given n) and out[1] = 1.0 if every g
// is finite else 0.0, into device memory: reading them back is the caller's (one) host sync.
template <typename T>
void grad_sumsq_cuda(int64_t n, const T* g, double* workspace, double* out, CUstream_st* stream);
template <typename T>
void grad_scale_clamp_cuda(int64_t n, T* g, double scale, double clip, CUstream_st* stream);
template <typename T>
void maxnorm_rows_cuda(int64_t rows, int64_t cols, T* p, double max_norm, CUstream_st* stream);

}  // namespace ck
