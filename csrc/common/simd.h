// AVX2 helpers shared by the elementwise kernels. Compiled only when the build targets AVX2
// (CNNKIT_NATIVE on an AVX2 machine); every kernel keeps a scalar path that gives the same bits.
#pragma once
#if defined(__AVX2__)
#include <immintrin.h>

namespace ck::simd {

// Four vectors of 8 int32 lanes that are all-ones or zero -> 32 bytes of 1 or 0, in lane order.
// packs works within 128-bit halves, so the 4-byte chunks come out as (a_lo b_lo c_lo d_lo a_hi ...)
// and one cross-lane permute puts them back in order.
inline __m256i lanes_to_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
  const __m256i bytes = _mm256_packs_epi16(ab, cd);
  const __m256i fixed = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  return _mm256_and_si256(fixed, _mm256_set1_epi8(1));
}

}  // namespace ck::simd
#endif
