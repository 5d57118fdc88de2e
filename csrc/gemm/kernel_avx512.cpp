// AVX-512F micro-kernel: an 8 x 48 tile of C in 24 zmm accumulators. Per step of k: three aligned loads of
// B (48 floats), eight broadcasts of A folded into the FMAs as memory operands ({1to16}), 24 FMAs. That is
// 11 loads per 24 FMAs, inside the two-loads-per-cycle budget at two FMAs per cycle; the accumulators
// cover FMA latency (4 cycles x 2 ports = 8 in flight) three times over.
#include "gemm/dot_kernel.h"
#include "gemm/kernel.h"

#if defined(__AVX512F__)
#include <immintrin.h>

namespace ck::gemm_detail {
namespace {

constexpr int kMR = 8, kNV = 3, kNR = kNV * 16;

void micro_8x48(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, bool accumulate) {
  __m512 acc[kMR][kNV];
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < kNV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < kc; ++kk) {
    __m512 bv[kNV];
#pragma GCC unroll 3
    for (int v = 0; v < kNV; ++v) bv[v] = _mm512_load_ps(b + v * 16);
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 3
      for (int v = 0; v < kNV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
    a += kMR;
    b += kNR;
  }
  const __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) {
    float* ci = c + i * ldc;
#pragma GCC unroll 3
    for (int v = 0; v < kNV; ++v) {
      __m512 r = _mm512_mul_ps(acc[i][v], al);
      if (accumulate) r = _mm512_add_ps(r, _mm512_loadu_ps(ci + v * 16));
      _mm512_storeu_ps(ci + v * 16, r);
    }
  }
}

const MicroKernel<float> kKernel{"avx512", kMR, kNR, micro_8x48, dot_nt<16, 4, 4>};

}  // namespace

const MicroKernel<float>* sgemm_kernel_avx512() { return &kKernel; }

}  // namespace ck::gemm_detail

#else
namespace ck::gemm_detail {
const MicroKernel<float>* sgemm_kernel_avx512() { return nullptr; }
}  // namespace ck::gemm_detail
#endif
