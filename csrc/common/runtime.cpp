// Threading, the GEMM entry points and build facts. See runtime.h for the threading policy.
#include "common/runtime.h"

#include <omp.h>

#include <stdexcept>

#include "common/check.h"
#include "gemm/gemm.h"

namespace ck {

namespace detail {
std::atomic<int> g_num_threads{1};
}

void runtime_init() {
  detail::g_num_threads.store(omp_get_max_threads(), std::memory_order_relaxed);
  gemm_init();
}

void set_num_threads(int n) {
  CK_CHECK(n >= 1, "set_num_threads", "n must be >= 1, got ", n);
  detail::g_num_threads.store(n, std::memory_order_relaxed);
}

int get_num_threads() { return num_threads(); }

int threads_in_region() {
  int used = 0;
#pragma omp parallel num_threads(num_threads())
  {
#pragma omp single
    used = omp_get_num_threads();
  }
  return used;
}

std::string openmp_version() { return std::to_string(_OPENMP); }

// The vector ISA the kernels were compiled for (this translation unit shares their flags).
std::string simd_level() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#else
  return "baseline";
#endif
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc, const PackedA* packed) {
  sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, packed);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc, const PackedA*) {
  dgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

#ifndef CNNKIT_WITH_CUDA
int cuda_device_count(std::string* why) {
  if (why) *why = "cnnkit was built without CUDA (no nvcc at build time, or CNNKIT_CUDA=OFF)";
  return 0;
}
bool cuda_built() { return false; }
#endif

}  // namespace ck
