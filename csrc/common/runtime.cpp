// Threading, the GEMM entry points and build facts. See runtime.h for the threading policy.
#include "common/runtime.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "common/check.h"
#include "gemm/gemm.h"

namespace ck {

namespace detail {
std::atomic<int> g_num_threads{1};
}

namespace {

std::string g_malloc_policy = "default";

// glibc serves a request above its mmap threshold with a fresh mmap and returns it with munmap, and gives
// the top of its heap back to the kernel once more than the trim threshold is free there. Both thresholds
// start at 128 KiB. A training step allocates and frees every activation and gradient (MiBs each) once per
// step, so with those defaults the next step touches new pages again: on a 2-vCPU VM that was 5,000-16,000
// page faults per ResNet-20 step (batch 32), 10-30% of its time inside the convolutions. "retain" keeps
// freed memory in the process, as PyTorch's caching allocator does on a GPU: requests up to 32 MiB (glibc's
// largest allowed mmap threshold) come from the heap, and the heap is trimmed only past 1 GiB free. The
// peak resident size is unchanged; memory freed after the peak is kept for reuse instead of returned.
// A user's own MALLOC_* / GLIBC_TUNABLES settings win; CNNKIT_MALLOC=default leaves glibc as it is.
void malloc_init() {
  const char* env = std::getenv("CNNKIT_MALLOC");
  std::string want = env && *env ? env : "retain";
  if (want != "retain" && want != "default")
    throw std::invalid_argument("CNNKIT_MALLOC must be 'retain' or 'default', got '" + want + "'");
  if (want == "default") return;
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_") ||
      (std::getenv("GLIBC_TUNABLES") && std::strstr(std::getenv("GLIBC_TUNABLES"), "glibc.malloc."))) {
    g_malloc_policy = "default (the environment sets glibc's malloc tunables)";
    return;
  }
  if (mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1) g_malloc_policy = "retain";
#else
  g_malloc_policy = "default (not glibc)";
#endif
}

}  // namespace

void runtime_init() {
  detail::g_num_threads.store(omp_get_max_threads(), std::memory_order_relaxed);
  gemm_init();
  malloc_init();
}

std::string malloc_policy() { return g_malloc_policy; }

#ifndef CNNKIT_BUILD_ISA
#define CNNKIT_BUILD_ISA "native"
#define CNNKIT_BUILD_FLAGS ""
#endif
std::string build_isa() { return CNNKIT_BUILD_ISA; }
std::string build_flags() { return CNNKIT_BUILD_FLAGS; }

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
