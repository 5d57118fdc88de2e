// CPU batch normalization. OpenMP over channels: one channel's N planes of S values are read by one
// thread, the sums kept in double, so the result does not depend on the thread count. Each pass streams
// the data once; the statistics take two passes (mean, then the centred sum of squares).
#include "ops/batchnorm.h"

#include <cmath>

#include "common/runtime.h"

namespace ck {

template <typename T>
void batchnorm_stats_cpu(int64_t N, int64_t C, int64_t S, const T* x, T* mean, T* var) {
  const double M = double(N) * double(S);
#pragma omp parallel for num_threads(num_threads()) schedule(static) if (N * C * S >= kGrainElements)
  for (int64_t c = 0; c < C; ++c) {
    double s = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* p = x + (n * C + c) * S;
      double a = 0;
#pragma omp simd reduction(+ : a)
      for (int64_t i = 0; i < S; ++i) a += double(p[i]);
      s += a;
    }
    const double mu = s / M;
    double q = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* p = x + (n * C + c) * S;
      double a = 0;
#pragma omp simd reduction(+ : a)
      for (int64_t i = 0; i < S; ++i) {
        const double d = double(p[i]) - mu;
        a += d * d;
      }
      q += a;
    }
    mean[c] = T(mu);
    var[c] = T(q / M);
  }
}

template <typename T>
void channel_affine_cpu(int64_t N, int64_t C, int64_t S, const T* x, const T* alpha, const T* beta, T* y) {
#pragma omp parallel for num_threads(num_threads()) collapse(2) schedule(static) if (N * C * S >= kGrainElements)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const T a = alpha[c], b = beta[c];
      const T* p = x + (n * C + c) * S;
      T* q = y + (n * C + c) * S;
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) q[i] = p[i] * a + b;
    }
  }
}

template <typename T>
void batchnorm_bwd_cpu(int64_t N, int64_t C, int64_t S, const T* dy, const T* x, const T* mean, const T* invstd,
                       const T* weight, bool train, T* dx, double* sum_dy, double* dotp) {
  const double M = double(N) * double(S);
#pragma omp parallel for num_threads(num_threads()) schedule(static) if (N * C * S >= kGrainElements)
  for (int64_t c = 0; c < C; ++c) {
    const double mu = double(mean[c]);
    double sd = 0, sp = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* g = dy + (n * C + c) * S;
      const T* p = x + (n * C + c) * S;
      double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
      for (int64_t i = 0; i < S; ++i) {
        a += double(g[i]);
        b += (double(p[i]) - mu) * double(g[i]);
      }
      sd += a;
      sp += b;
    }
    sum_dy[c] = sd;
    dotp[c] = sp;
    if (!dx) continue;
    const double is = double(invstd[c]), w = weight ? double(weight[c]) : 1.0;
    // train: dx = (dy - sum_dy / M - (x - mean) * dotp * invstd^2 / M) * invstd * w; eval: dy * invstd * w
    const T scale = T(is * w), k = train ? T(sp * is * is / M) : T(0), gm = train ? T(sd / M) : T(0);
    const T m = T(mu);
    for (int64_t n = 0; n < N; ++n) {
      const T* g = dy + (n * C + c) * S;
      const T* p = x + (n * C + c) * S;
      T* o = dx + (n * C + c) * S;
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) o[i] = (g[i] - gm - (p[i] - m) * k) * scale;
    }
  }
}

#define CK_INSTANTIATE(T)                                                                                         \
  template void batchnorm_stats_cpu<T>(int64_t, int64_t, int64_t, const T*, T*, T*);                              \
  template void channel_affine_cpu<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*, T*);               \
  template void batchnorm_bwd_cpu<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*, const T*, const T*, \
                                     bool, T*, double*, double*);
CK_INSTANTIATE(float)
CK_INSTANTIATE(double)
#undef CK_INSTANTIATE

}  // namespace ck
