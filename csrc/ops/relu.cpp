// CPU ReLU: one streaming pass, OpenMP + SIMD. Written as selects so NaN falls through unchanged.
#include "ops/relu.h"

#include "common/runtime.h"

namespace ck {

template <typename T>
void relu_fwd_cpu(int64_t n, const T* x, T* y) {
#pragma omp parallel for simd num_threads(num_threads()) schedule(static) if (n >= kGrainElements)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];
}

template <typename T>
void relu_bwd_cpu(int64_t n, const T* dy, const T* y, T* dx) {
#pragma omp parallel for simd num_threads(num_threads()) schedule(static) if (n >= kGrainElements)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] <= T(0) ? T(0) : dy[i];
}

template void relu_fwd_cpu<float>(int64_t, const float*, float*);
template void relu_fwd_cpu<double>(int64_t, const double*, double*);
template void relu_bwd_cpu<float>(int64_t, const float*, const float*, float*);
template void relu_bwd_cpu<double>(int64_t, const double*, const double*, double*);

}  // namespace ck
