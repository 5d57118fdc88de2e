// AVX2 + FMA micro-kernel: a 6 x 16 tile of C in 12 ymm accumulators (the classic Haswell shape: 16 ymm
// registers hold 12 accumulators, 2 B vectors and 1 broadcast). Per step of k: two aligned loads of B, six
// broadcasts of A, 12 FMAs.
#include "gemm/dot_kernel.h"
#include "gemm/kernel.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace ck::gemm_detail {
namespace {

constexpr int kMR = 6, kNV = 2, kNR = kNV * 8;

void micro_6x16(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, bool accumulate) {
  __m256 acc[kMR][kNV];
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < kNV; ++v) acc[i][v] = _mm256_setzero_ps();
  for (int64_t kk = 0; kk < kc; ++kk) {
    __m256 bv[kNV];
#pragma GCC unroll 2
    for (int v = 0; v < kNV; ++v) bv[v] = _mm256_load_ps(b + v * 8);
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 2
      for (int v = 0; v < kNV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
    }
    a += kMR;
    b += kNR;
  }
  const __m256 al = _mm256_set1_ps(alpha);
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i) {
    float* ci = c + i * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < kNV; ++v) {
      __m256 r = _mm256_mul_ps(acc[i][v], al);
      if (accumulate) r = _mm256_add_ps(r, _mm256_loadu_ps(ci + v * 8));
      _mm256_storeu_ps(ci + v * 8, r);
    }
  }
}

const MicroKernel<float> kKernel{"avx2", kMR, kNR, micro_6x16, dot_nt<8, 2, 4>};

}  // namespace

const MicroKernel<float>* sgemm_kernel_avx2() { return &kKernel; }

}  // namespace ck::gemm_detail

#else
namespace ck::gemm_detail {
const MicroKernel<float>* sgemm_kernel_avx2() { return nullptr; }
}  // namespace ck::gemm_detail
#endif
