// CPU inverted dropout. Work is split into chunks of whole Philox blocks (4 elements each); each block's
// counter depends only on its element index, so the mask does not depend on the split or thread count.
// With AVX2, eight Philox blocks run side by side in the lanes of one vector (32 elements a step);
// the scalar loop handles the tail and non-AVX2 builds and yields the same bits.
#include "ops/dropout.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common/check.h"
#include "common/runtime.h"
#include "common/philox.h"
#include "common/simd.h"

namespace ck {

uint64_t dropout_threshold(const char* op, double p) {
  CK_CHECK(p >= 0.0 && p < 1.0, op, "p (drop probability) must be in [0, 1), got ", p);
  return static_cast<uint64_t>(std::ceil(p * 4294967296.0));
}

namespace {

// Scalar reference for elements [i0, i1) (i0 a multiple of 4).
template <typename T>
void dropout_span_scalar(int64_t i0, int64_t i1, const T* x, uint64_t thr, T scale, uint64_t seed, uint64_t offset,
                         T* y, uint8_t* mask) {
  for (int64_t b = i0 / 4; b * 4 < i1; ++b) {
    const Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(b));
    for (int j = 0; j < 4; ++j) {
      const int64_t i = b * 4 + j;
      if (i < i0 || i >= i1) continue;
      const uint8_t keep = static_cast<uint64_t>(r.v[j]) >= thr;
      mask[i] = keep;
      y[i] = x[i] * T(keep) * scale;
    }
  }
}

#if defined(__AVX2__)
// Eight Philox-4x32-10 streams at once: lane l runs block (b0 + l). Returns the four output words,
// word j of every lane in w[j].
inline void philox8(uint64_t b0, uint64_t seed, uint64_t offset, __m256i w[4]) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // Block indices b0 + l; the high word carries only if the low word wraps.
  const uint32_t lo = static_cast<uint32_t>(b0), hi = static_cast<uint32_t>(b0 >> 32);
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(lo)), lane);
  const __m256i wrapped =
      _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(lo)), _mm256_set1_epi32(INT32_MIN)),
                         _mm256_xor_si256(c0, _mm256_set1_epi32(INT32_MIN)));
  __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(hi)), wrapped);  // +1 where wrapped
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset)));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset >> 32)));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    // 32x32 -> 64-bit products of the even lanes, then of the odd lanes shifted down.
    const __m256i e0 = _mm256_mul_epu32(c0, m0), o0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
    const __m256i e1 = _mm256_mul_epu32(c2, m1), o1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
    const __m256i lo0 = _mm256_blend_epi32(e0, _mm256_slli_epi64(o0, 32), 0xAA);
    const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(e0, 32), o0, 0xAA);
    const __m256i lo1 = _mm256_blend_epi32(e1, _mm256_slli_epi64(o1, 32), 0xAA);
    const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(e1, 32), o1, 0xAA);
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // Transpose 4 words x 8 blocks into element order: w[0] = elements 0..7 (blocks 0, 1), and so on.
  const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
  const __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  w[0] = _mm256_permute2x128_si256(u0, u1, 0x20);
  w[1] = _mm256_permute2x128_si256(u2, u3, 0x20);
  w[2] = _mm256_permute2x128_si256(u0, u1, 0x31);
  w[3] = _mm256_permute2x128_si256(u2, u3, 0x31);
}

// keep = word >= thr as all-ones lanes (unsigned compare through the sign-bias trick).
inline __m256i keep_lanes(__m256i word, uint64_t thr) {
  if (thr == 0) return _mm256_set1_epi32(-1);
  if (thr > 0xFFFFFFFFull) return _mm256_setzero_si256();
  const __m256i bias = _mm256_set1_epi32(INT32_MIN);
  const __m256i limit = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(thr - 1) ^ 0x80000000u));
  return _mm256_cmpgt_epi32(_mm256_xor_si256(word, bias), limit);
}

// Elements [i0, i1), i0 a multiple of 32; returns the first element not done.
int64_t dropout_span_avx2(int64_t i0, int64_t i1, const float* x, uint64_t thr, float scale, uint64_t seed,
                          uint64_t offset, float* y, uint8_t* mask) {
  const __m256 vscale = _mm256_set1_ps(scale), one = _mm256_set1_ps(1.0f);
  int64_t i = i0;
  for (; i + 32 <= i1; i += 32) {
    __m256i w[4], k[4];
    philox8(static_cast<uint64_t>(i / 4), seed, offset, w);
    for (int j = 0; j < 4; ++j) {
      k[j] = keep_lanes(w[j], thr);
      const __m256 m = _mm256_and_ps(_mm256_castsi256_ps(k[j]), one);
      _mm256_storeu_ps(y + i + 8 * j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * j), m), vscale));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(mask + i), simd::lanes_to_bytes(k[0], k[1], k[2], k[3]));
  }
  return i;
}
#endif

}  // namespace

template <typename T>
void dropout_fwd_cpu(int64_t n, const T* x, double p, uint64_t seed, uint64_t offset, T* y, uint8_t* mask) {
  const uint64_t thr = dropout_threshold("dropout_fwd", p);
  const T scale = dropout_scale<T>(p);
  constexpr int64_t kChunk = 4096;  // elements per task: a multiple of 32, so SIMD steps align to blocks
#pragma omp parallel for num_threads(num_threads()) schedule(static) if (n >= kGrainElements)
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t i1 = std::min(n, i0 + kChunk);
    int64_t i = i0;
#if defined(__AVX2__)
    if constexpr (std::is_same_v<T, float>) i = dropout_span_avx2(i0, i1, x, thr, scale, seed, offset, y, mask);
#endif
    dropout_span_scalar(i, i1, x, thr, scale, seed, offset, y, mask);
  }
}

template <typename T>
void dropout_bwd_cpu(int64_t n, const T* dy, const uint8_t* mask, double p, T* dx) {
  dropout_threshold("dropout_bwd", p);
  const T scale = dropout_scale<T>(p);
  constexpr int64_t kChunk = 16384;
#pragma omp parallel for num_threads(num_threads()) schedule(static) if (n >= kGrainElements)
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t i1 = std::min(n, i0 + kChunk);
    int64_t i = i0;
#if defined(__AVX2__)
    if constexpr (std::is_same_v<T, float>) {
      const __m256 vscale = _mm256_set1_ps(scale), one = _mm256_set1_ps(1.0f);
      for (; i + 8 <= i1; i += 8) {
        // Any non-zero mask byte counts as kept (1), as in the scalar loop.
        const __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mask + i));
        const __m256i nz = _mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(m8), _mm256_setzero_si256());
        const __m256 m = _mm256_and_ps(_mm256_castsi256_ps(nz), one);
        _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(dy + i), m), vscale));
      }
    }
#endif
    for (; i < i1; ++i) dx[i] = dy[i] * T(mask[i] != 0) * scale;
  }
}

template void dropout_fwd_cpu<float>(int64_t, const float*, double, uint64_t, uint64_t, float*, uint8_t*);
template void dropout_fwd_cpu<double>(int64_t, const double*, double, uint64_t, uint64_t, double*, uint8_t*);
template void dropout_bwd_cpu<float>(int64_t, const float*, const uint8_t*, double, float*);
template void dropout_bwd_cpu<double>(int64_t, const double*, const uint8_t*, double, double*);

}  // namespace ck
