// CPU optimizer steps: one OpenMP pass (static split, SIMD within each thread's range) reading each element of
// p, g and the state once and writing p and the state once. Every option that adds work (momentum, nesterov,
// amsgrad, centered, first step, clipping, L1) is a template flag, so each inner loop is branch-free, vectorizes
// and carries no instruction for an option that is off; weight decay is one fma (a zero coefficient when off).
// At 11.7M float32 the loops run at DRAM bandwidth; in cache Adam costs ~0.5 ns per element on one core.
#include "ops/optim.h"

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "common/runtime.h"

namespace ck {

// Calls f(clip, l1) with std::integral_constant<bool, ...> arguments matching the prep coefficients.
template <typename T, typename F>
inline void with_prep_flags(const GradPrep<T>& c, F&& f) {
  const bool clip = c.gscale != T(1) || c.gclip <= std::numeric_limits<T>::max();
  const bool l1 = c.l1 != T(0);
  using Y = std::true_type;
  using N = std::false_type;
  if (clip) {
    l1 ? f(Y{}, Y{}) : f(Y{}, N{});
  } else {
    l1 ? f(N{}, Y{}) : f(N{}, N{});
  }
}

// ---------------------------------------------------------------- SGD

template <typename T, bool MOMENTUM, bool FIRST, bool NESTEROV, bool CLIP, bool L1>
static void sgd_loop(int64_t n, T* __restrict p, const T* __restrict g, T* __restrict buf, const SgdArgs& a,
                     const GradPrep<T> c) {
  const T neg_lr = T(a.neg_lr), mu = T(a.momentum), omd = T(a.one_minus_dampening);
#pragma omp parallel for simd num_threads(num_threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T pi = p[i];
    T d = prep_grad<CLIP, L1>(g[i], pi, c);
    if constexpr (MOMENTUM) {
      T b;
      if constexpr (FIRST)
        b = d;
      else
        b = buf[i] * mu + omd * d;
      buf[i] = b;
      if constexpr (NESTEROV)
        d = d + mu * b;
      else
        d = b;
    }
    p[i] = pi + neg_lr * d;
  }
}

template <typename T>
void sgd_step_cpu(int64_t n, T* p, const T* g, T* buf, const SgdArgs& a, const GradPrep<T>& prep) {
  with_prep_flags(prep, [&](auto clip, auto l1) {
    constexpr bool C = decltype(clip)::value, L = decltype(l1)::value;
    if (a.momentum == 0.0) return sgd_loop<T, false, false, false, C, L>(n, p, g, buf, a, prep);
    if (a.first) {
      return a.nesterov ? sgd_loop<T, true, true, true, C, L>(n, p, g, buf, a, prep)
                        : sgd_loop<T, true, true, false, C, L>(n, p, g, buf, a, prep);
    }
    return a.nesterov ? sgd_loop<T, true, false, true, C, L>(n, p, g, buf, a, prep)
                      : sgd_loop<T, true, false, false, C, L>(n, p, g, buf, a, prep);
  });
}

// ---------------------------------------------------------------- AdaGrad

template <typename T, bool CLIP, bool L1>
static void adagrad_loop(int64_t n, T* __restrict p, const T* __restrict g, T* __restrict sum, const AdagradArgs& a,
                         const GradPrep<T> c) {
  const T neg_clr = T(a.neg_clr), eps = T(a.eps);
#pragma omp parallel for simd num_threads(num_threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T pi = p[i];
    const T d = prep_grad<CLIP, L1>(g[i], pi, c);
    const T s = sum[i] + d * d;  // addcmul_(g, g, value=1)
    sum[i] = s;
    p[i] = pi + (neg_clr * d) / (std::sqrt(s) + eps);
  }
}

template <typename T>
void adagrad_step_cpu(int64_t n, T* p, const T* g, T* sum, const AdagradArgs& a, const GradPrep<T>& prep) {
  with_prep_flags(prep, [&](auto clip, auto l1) {
    adagrad_loop<T, decltype(clip)::value, decltype(l1)::value>(n, p, g, sum, a, prep);
  });
}

// ---------------------------------------------------------------- RMSProp

template <typename T, bool CENTERED, bool MOMENTUM, bool CLIP, bool L1>
static void rmsprop_loop(int64_t n, T* __restrict p, const T* __restrict g, T* __restrict sq, T* __restrict ga,
                         T* __restrict buf, const RmspropArgs& a, const GradPrep<T> c) {
  const T neg_lr = T(a.neg_lr), alpha = T(a.alpha), oma = T(1.0 - a.alpha), eps = T(a.eps), mu = T(a.momentum);
  const T oma_c = T(1.0 - (1.0 - a.alpha));  // lerp's (1 - w) for w = 1 - alpha
  const bool small = std::abs(1.0 - a.alpha) < 0.5;
#pragma omp parallel for simd num_threads(num_threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T pi = p[i];
    const T d = prep_grad<CLIP, L1>(g[i], pi, c);
    const T s = sq[i] * alpha + (oma * d) * d;
    sq[i] = s;
    T avg;
    if constexpr (CENTERED) {
      const T m = lerp(ga[i], d, oma, oma_c, small);
      ga[i] = m;
      avg = std::sqrt(s + (T(-1) * m) * m);
    } else {
      avg = std::sqrt(s);
    }
    avg = avg + eps;
    if constexpr (MOMENTUM) {
      const T b = buf[i] * mu + d / avg;
      buf[i] = b;
      p[i] = pi + neg_lr * b;
    } else {
      p[i] = pi + (neg_lr * d) / avg;
    }
  }
}

template <typename T>
void rmsprop_step_cpu(int64_t n, T* p, const T* g, T* square_avg, T* grad_avg, T* buf, const RmspropArgs& a,
                      const GradPrep<T>& prep) {
  const bool centered = grad_avg != nullptr, momentum = a.momentum > 0.0;
  with_prep_flags(prep, [&](auto clip, auto l1) {
    constexpr bool C = decltype(clip)::value, L = decltype(l1)::value;
    if (centered) {
      return momentum ? rmsprop_loop<T, true, true, C, L>(n, p, g, square_avg, grad_avg, buf, a, prep)
                      : rmsprop_loop<T, true, false, C, L>(n, p, g, square_avg, grad_avg, buf, a, prep);
    }
    return momentum ? rmsprop_loop<T, false, true, C, L>(n, p, g, square_avg, grad_avg, buf, a, prep)
                    : rmsprop_loop<T, false, false, C, L>(n, p, g, square_avg, grad_avg, buf, a, prep);
  });
}

// ---------------------------------------------------------------- Adam / AdamW

template <typename T, bool AMSGRAD, bool SMALL, bool CLIP, bool L1>
static void adam_loop(int64_t n, T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                      T* __restrict vmax, const AdamArgs& a, const GradPrep<T> c) {
  const T w = T(1.0 - a.beta1), omw = T(1.0 - (1.0 - a.beta1)), beta2 = T(a.beta2), omb2 = T(1.0 - a.beta2);
  const T neg_step = T(a.neg_step_size), inv_bc2s = T(1.0 / a.bc2_sqrt), eps = T(a.eps), decay = T(a.decay);
#pragma omp parallel for simd num_threads(num_threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T p0 = p[i];
    const T d = prep_grad<CLIP, L1>(g[i], p0, c);  // coupled decay and L1 see the parameter before AdamW's decay
    const T pi = p0 * decay;                       // AdamW: param.mul_(1 - lr * wd) first
    const T mi = lerp(m[i], d, w, omw, SMALL);
    const T vi = v[i] * beta2 + (omb2 * d) * d;
    m[i] = mi;
    v[i] = vi;
    T vv = vi;
    if constexpr (AMSGRAD) {
      vv = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vv;
    }
    p[i] = pi + (neg_step * mi) / (std::sqrt(vv) * inv_bc2s + eps);
  }
}

template <typename T>
void adam_step_cpu(int64_t n, T* p, const T* g, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const AdamArgs& a,
                   const GradPrep<T>& prep) {
  const bool small = std::abs(1.0 - a.beta1) < 0.5;
  with_prep_flags(prep, [&](auto clip, auto l1) {
    constexpr bool C = decltype(clip)::value, L = decltype(l1)::value;
    if (max_exp_avg_sq != nullptr) {
      return small ? adam_loop<T, true, true, C, L>(n, p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, a, prep)
                   : adam_loop<T, true, false, C, L>(n, p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, a, prep);
    }
    return small ? adam_loop<T, false, true, C, L>(n, p, g, exp_avg, exp_avg_sq, nullptr, a, prep)
                 : adam_loop<T, false, false, C, L>(n, p, g, exp_avg, exp_avg_sq, nullptr, a, prep);
  });
}

// ---------------------------------------------------------------- gradient checks and clipping

// The sum of squares has the same bits at every thread count and in every run: it is cut into fixed blocks
// of kSumBlock elements whatever the thread count; element i of a block adds (in float64, in element order)
// into lane i % kSumLanes, a block's lanes add in lane order, and the block sums add in block order on the
// calling thread. Threads only decide who computes which block. For float32, x*x is exact in float64, so
// only those additions round.
//
// A read-only pass runs at DRAM speed only with enough loads in flight: one running sum is a chain of
// dependent adds, and one forward stream per core leaves the prefetchers short of work (~15 GB/s on one core
// here). So the kSumLanes partial sums are independent chains, and each thread cuts its share of the blocks
// into kSumStreams runs and walks them side by side (which changes no block's order of additions).
constexpr int64_t kSumBlock = 4096;
constexpr int kSumLanes = 16, kSumStreams = 4;

// Sums of squares of NB whole blocks, the b-th starting at g + b * step elements, walked side by side:
// s[b * step / kSumBlock] gets its sum; z[...] stays 0 while every g*0 of the block is 0 and becomes NaN at
// the first Inf or NaN.
template <int NB, typename T>
inline void sumsq_blocks(const T* __restrict g, int64_t step, double* __restrict s, T* __restrict z) {
  double acc[NB][kSumLanes] = {};
  T zz[NB][kSumLanes] = {};
  for (int64_t k = 0; k < kSumBlock; k += kSumLanes) {
    for (int b = 0; b < NB; ++b) {
      const T* q = g + b * step + k;
#pragma omp simd
      for (int j = 0; j < kSumLanes; ++j) {
        const double x = double(q[j]);
        acc[b][j] += x * x;
        zz[b][j] += q[j] * T(0);
      }
    }
  }
  for (int b = 0; b < NB; ++b) {
    double t = acc[b][0];
    T u = zz[b][0];
    for (int j = 1; j < kSumLanes; ++j) {
      t += acc[b][j];
      u += zz[b][j];
    }
    s[b * (step / kSumBlock)] = t;
    z[b * (step / kSumBlock)] = u;
  }
}

// The same for the last block when it holds len < kSumBlock elements (lanes past its end stay 0).
template <typename T>
inline void sumsq_partial_block(const T* __restrict g, int64_t len, double* s, T* z) {
  double acc[kSumLanes] = {};
  T zz[kSumLanes] = {};
  for (int64_t i = 0; i < len; ++i) {
    const double x = double(g[i]);
    acc[i % kSumLanes] += x * x;
    zz[i % kSumLanes] += g[i] * T(0);
  }
  double t = acc[0];
  T u = zz[0];
  for (int j = 1; j < kSumLanes; ++j) {
    t += acc[j];
    u += zz[j];
  }
  *s = t;
  *z = u;
}

template <typename T>
double grad_sumsq_cpu(int64_t n, const T* __restrict g, bool* finite) {
  const int64_t whole = n / kSumBlock, nblocks = whole + (n % kSumBlock != 0);
  std::vector<double> part(static_cast<size_t>(nblocks));  // allocated here: nothing may throw in the region
  std::vector<T> zpart(static_cast<size_t>(nblocks));
#pragma omp parallel num_threads(num_threads()) if (n >= kGrainElements)
  {
    const int64_t nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t lo = whole * tid / nt, hi = whole * (tid + 1) / nt;  // this thread's whole blocks
    const int64_t run = (hi - lo) / kSumStreams;                       // blocks per stream
    for (int64_t k = 0; k < run; ++k)
      sumsq_blocks<kSumStreams>(g + (lo + k) * kSumBlock, run * kSumBlock, &part[lo + k], &zpart[lo + k]);
    for (int64_t b = lo + kSumStreams * run; b < hi; ++b)
      sumsq_blocks<1>(g + b * kSumBlock, kSumBlock, &part[b], &zpart[b]);
    if (tid == nt - 1 && whole < nblocks)
      sumsq_partial_block(g + whole * kSumBlock, n - whole * kSumBlock, &part[whole], &zpart[whole]);
  }
  double s = 0.0;
  T z = T(0);
  for (int64_t b = 0; b < nblocks; ++b) {
    s += part[b];
    z += zpart[b];
  }
  *finite = (z == T(0));
  return s;
}

template <typename T>
void grad_scale_clamp_cpu(int64_t n, T* __restrict g, double scale, double clip) {
  const T sc = T(scale), c = T(clip);
#pragma omp parallel for simd num_threads(num_threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T x = g[i] * sc;
    g[i] = x < -c ? -c : (x > c ? c : x);
  }
}

template <typename T>
void maxnorm_rows_cpu(int64_t rows, int64_t cols, T* p, double max_norm) {
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    T* row = p + r * cols;
    double s = 0.0;
    for (int64_t j = 0; j < cols; ++j) s += double(row[j]) * double(row[j]);
    const double norm = std::sqrt(s);
    if (norm > max_norm) {
      const T f = T(max_norm / (norm + 1e-7));
      for (int64_t j = 0; j < cols; ++j) row[j] = row[j] * f;
    }
  }
}

#define CK_OPTIM_INSTANTIATE(T)                                                                                 \
  template void sgd_step_cpu<T>(int64_t, T*, const T*, T*, const SgdArgs&, const GradPrep<T>&);                 \
  template void adagrad_step_cpu<T>(int64_t, T*, const T*, T*, const AdagradArgs&, const GradPrep<T>&);         \
  template void rmsprop_step_cpu<T>(int64_t, T*, const T*, T*, T*, T*, const RmspropArgs&, const GradPrep<T>&); \
  template void adam_step_cpu<T>(int64_t, T*, const T*, T*, T*, T*, const AdamArgs&, const GradPrep<T>&);       \
  template double grad_sumsq_cpu<T>(int64_t, const T*, bool*);                                                  \
  template void grad_scale_clamp_cpu<T>(int64_t, T*, double, double);                                           \
  template void maxnorm_rows_cpu<T>(int64_t, int64_t, T*, double);
CK_OPTIM_INSTANTIATE(float)
CK_OPTIM_INSTANTIATE(double)
#undef CK_OPTIM_INSTANTIATE

}  // namespace ck
