// Optimizer steps as fused one-pass kernels over flat buffers (one buffer holds every parameter of a
// group), with torch.optim's update rules, defaults and arithmetic order (torch/optim/{sgd,adagrad,
// rmsprop,adam}.py, the single-tensor path), so float64 agrees with torch to ~1e-15 per step.
// The per-element math is in CK_OPTIM_HD inline functions below so the CUDA twin (optim.cu) runs the same
// lines; so are the per-step scalars (bias corrections, decayed lr, clip coefficient): computed once per step
// on the host for the CPU (as torch computes them, in double), or once per GPU thread from the device
// control block (OptimCtl below), and cast to T as torch casts a Python scalar to the tensor dtype.
#pragma once
#include <math.h>

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

// ---- Per-step scalars: the one home of these formulas, used by the host (the CPU path, through
// cnnkit._C.adam_scalars / adagrad_clr / clip_coef) and by the CUDA steps reading the control block.
// All in double, torch's expressions and order (torch/optim/adam.py, _single_tensor_adam, not capturable;
// torch/optim/adagrad.py; torch/nn/utils/clip_grad.py). pow(x, 0.5), not sqrt: Python's `x ** 0.5`.

// Adam step t (1-based): neg_step_size = -lr / (1 - beta1^t), bc2_sqrt = (1 - beta2^t)^0.5.
CK_OPTIM_HD inline void adam_scalars(double lr, double beta1, double beta2, double t, double* neg_step_size,
                                     double* bc2_sqrt) {
  const double bias_correction1 = 1 - pow(beta1, t), bias_correction2 = 1 - pow(beta2, t);
  *neg_step_size = -(lr / bias_correction1);
  *bc2_sqrt = pow(bias_correction2, 0.5);
}

// AdaGrad step t: the decayed lr, lr / (1 + (t - 1) * lr_decay).
CK_OPTIM_HD inline double adagrad_clr(double lr, double lr_decay, double t) { return lr / (1 + (t - 1) * lr_decay); }

// Clip by global norm (torch.nn.utils.clip_grad_norm_): min(max_norm / (sqrt(sumsq) + 1e-6), 1).
CK_OPTIM_HD inline double clip_coef(double max_norm, double sumsq) {
  const double c = max_norm / (sqrt(sumsq) + 1e-6);
  return c < 1.0 ? c : 1.0;
}

// ---- The device control block: one small float64 device array per optimizer, so that a GPU step
// needs no host sync. grad_sumsq_cuda writes [kCtlSumsq] (sum of g^2 over every group, accumulated) and
// [kCtlFinite] (1.0 if every gradient is finite, else 0.0); each step kernel reads them once per thread: on
// 0.0 it writes nothing, else it takes the clip coefficient from the sum and step t = steps taken + 1 from
// its group's slot; optim_ctl_finish_cuda then advances the counters once (steps when finite, else
// [kCtlSkipped]). Per group gi, at kCtlGroup0 + kCtlPerGroup * gi: [+0] steps taken, [+1] 1.0 while SGD's
// momentum buffer waits for its first taken step (torch: buf = grad.clone() on the first step).
constexpr int64_t kCtlSumsq = 0, kCtlFinite = 1, kCtlSkipped = 2, kCtlGroup0 = 3, kCtlPerGroup = 2;
CK_OPTIM_HD inline int64_t ctl_size(int64_t groups) { return kCtlGroup0 + kCtlPerGroup * groups; }

// What a CUDA step reads from the control block. block == nullptr: every scalar comes from the host, as for
// the CPU. Otherwise the host passes the step-free values (Adam: neg_step_size = -lr, bc2_sqrt unused;
// AdaGrad: neg_clr = -lr and lr_decay; SGD: `first` unused) and, with clip_norm > 0, prep.gscale = +-1 (the
// sign, -1 for maximize), which the kernel multiplies by clip_coef(clip_norm, block[kCtlSumsq]).
struct OptimCtl {
  const double* block = nullptr;
  int64_t group = 0;
  double clip_norm = 0.0;
};

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
  double lr_decay = 0.0;  // read only with a control block (OptimCtl), where neg_clr carries -lr
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
// `ctl` (optional): read the control block as described at OptimCtl; a skipped step writes nothing.
template <typename T>
void sgd_step_cuda(int64_t n, T* p, const T* g, T* buf, const SgdArgs& a, const GradPrep<T>& prep, CUstream_st* stream,
                   const OptimCtl& ctl = {});
template <typename T>
void adagrad_step_cuda(int64_t n, T* p, const T* g, T* sum, const AdagradArgs& a, const GradPrep<T>& prep,
                       CUstream_st* stream, const OptimCtl& ctl = {});
template <typename T>
void rmsprop_step_cuda(int64_t n, T* p, const T* g, T* square_avg, T* grad_avg, T* buf, const RmspropArgs& a,
                       const GradPrep<T>& prep, CUstream_st* stream, const OptimCtl& ctl = {});
template <typename T>
void adam_step_cuda(int64_t n, T* p, const T* g, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const AdamArgs& a,
                    const GradPrep<T>& prep, CUstream_st* stream, const OptimCtl& ctl = {});
// Doubles of device scratch grad_sumsq_cuda needs (fixed, independent of n).
int64_t grad_sumsq_workspace_cuda();
// Writes out[0] = sum(g^2) (accumulated in double, deterministic for a given n) and out[1] = 1.0 if every g
// is finite else 0.0, into device memory: reading them back is the caller's (one) host sync. accumulate:
// out[0] += sum(g^2) and out[1] stays 1.0 only if it was and every g is finite (the control block's first two
// slots, summed over groups in group order).
template <typename T>
void grad_sumsq_cuda(int64_t n, const T* g, double* workspace, double* out, CUstream_st* stream,
                     bool accumulate = false);
// With a control block (ctl.block): nothing when its finite flag is 0.0, and with ctl.clip_norm > 0 the scale
// is scale * clip_coef(ctl.clip_norm, block[kCtlSumsq]) (clip_grad_norm_ without reading the norm back).
template <typename T>
void grad_scale_clamp_cuda(int64_t n, T* g, double scale, double clip, CUstream_st* stream, const OptimCtl& ctl = {});
// ctl_block (optional): nothing when its finite flag is 0.0 (the step this projection follows was skipped).
template <typename T>
void maxnorm_rows_cuda(int64_t rows, int64_t cols, T* p, double max_norm, CUstream_st* stream,
                       const double* ctl_block = nullptr);
// One thread, after every group's step: finite ? (each of `groups` step counters += 1, SGD flags = 0)
// : skipped += 1. The only writer of the counters during a step, so the step kernels need no atomics.
void optim_ctl_finish_cuda(double* block, int64_t groups, CUstream_st* stream);

}  // namespace ck
