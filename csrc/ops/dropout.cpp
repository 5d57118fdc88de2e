// CPU inverted dropout. Work is split into chunks of whole Philox blocks (4 elements each); each block's
// counter depends only on its element index, so the mask does not depend on the split.
#include "ops/dropout.h"

#include <cmath>

#include "common/check.h"
#include "common/philox.h"

namespace ck {

uint64_t dropout_threshold(const char* op, double p) {
  CK_CHECK(p >= 0.0 && p < 1.0, op, "p (drop probability) must be in [0, 1), got ", p);
  return static_cast<uint64_t>(std::ceil(p * 4294967296.0));
}

template <typename T>
void dropout_fwd_cpu(int64_t n, const T* x, double p, uint64_t seed, uint64_t offset, T* y, uint8_t* mask) {
  const uint64_t thr = dropout_threshold("dropout_fwd", p);
  const T scale = dropout_scale<T>(p);
  const int64_t nblocks = (n + 3) / 4;
  constexpr int64_t kChunk = 16;  // blocks per inner batch: independent Philox streams the compiler can interleave
#pragma omp parallel for schedule(static)
  for (int64_t b0 = 0; b0 < nblocks; b0 += kChunk) {
    uint32_t words[kChunk * 4];
    const int64_t bend = std::min(nblocks, b0 + kChunk);
    for (int64_t b = b0; b < bend; ++b) {
      Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(b));
      for (int j = 0; j < 4; ++j) words[(b - b0) * 4 + j] = r.v[j];
    }
    const int64_t i0 = b0 * 4, i1 = std::min(n, bend * 4);
    for (int64_t i = i0; i < i1; ++i) {
      const uint8_t keep = static_cast<uint64_t>(words[i - i0]) >= thr;
      mask[i] = keep;
      y[i] = keep ? x[i] * scale : T(0);
    }
  }
}

template <typename T>
void dropout_bwd_cpu(int64_t n, const T* dy, const uint8_t* mask, double p, T* dx) {
  dropout_threshold("dropout_bwd", p);
  const T scale = dropout_scale<T>(p);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] = mask[i] ? dy[i] * scale : T(0);
}

template void dropout_fwd_cpu<float>(int64_t, const float*, double, uint64_t, uint64_t, float*, uint8_t*);
template void dropout_fwd_cpu<double>(int64_t, const double*, double, uint64_t, uint64_t, double*, uint8_t*);
template void dropout_bwd_cpu<float>(int64_t, const float*, const uint8_t*, double, float*);
template void dropout_bwd_cpu<double>(int64_t, const double*, const uint8_t*, double, double*);

}  // namespace ck
