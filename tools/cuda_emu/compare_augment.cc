// augment_pipeline_cpu vs the source of augment.cu under the host emulation (tools/cuda_emu/run.sh): every
// transform alone and a fused 5-stage pipeline, float32 and float64, several (seed, epoch) keys, sparse ids,
// outputs and records compared bit for bit. Under the emulation both sides call the host's libm, so the
// equality of lighting and affine here checks the code paths only: on a GPU their log/cos/sin come from CUDA's
// libm (docs/kernels.md gives the tolerance); flip, crop, resized crop and jitter use no transcendental
// function after the draws that decide integers, and are bit-exact on a GPU as well.
#include "emu.h"
#include "emu_aug.h"
#include "ops/augment.h"
using namespace ck;

namespace {


template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(T) * a.size()) == 0;
}

template <class T>
void aug_case(const char* name, int64_t C, int64_t H, int64_t W, std::vector<AugStage> stages, bool keyed = true) {
  const std::vector<int64_t> ids = {3, 17, 100000000000LL, 5, 42};
  const int64_t N = static_cast<int64_t>(ids.size());
  for (AugStage& s : stages)
    if (s.kind == kLighting) s.eigval = kEigval, s.eigvec = kEigvec;
  const int64_t P = stages.back().P, Q = stages.back().Q;
  auto x = randn<T>(N * C * H * W);
  x[1] = T(NAN);  // propagates identically (sample 0, wherever the stages move it)
  bool ok = true;
  for (uint64_t seed : {uint64_t(0), uint64_t(12345678901234ULL)}) {
    for (uint32_t epoch : {0u, 7u}) {
      std::vector<T> y1(N * C * P * Q, T(-7)), y2(N * C * P * Q, T(9));
      std::vector<double> r1(N * kAugRecord, -1.0), r2(N * kAugRecord, 5.0);
      augment_pipeline_cpu<T>(N, C, H, W, x.data(), stages.data(), int(stages.size()), AugKey{seed, epoch, ids.data(), 2},
                              y1.data(), r1.data());
      augment_pipeline_cuda<T>(N, C, H, W, x.data(), stages.data(), int(stages.size()), AugKey{seed, epoch, ids.data(), 0},
                               y2.data(), r2.data(), S);
      ok = ok && same_bits(y1, y2) && same_bits(r1, r2);
      // the output depends on the key (a batch is not a constant), unless the case is deterministic
      if (seed != 0 && epoch != 0) {
        std::vector<T> y0(y1.size());
        augment_pipeline_cpu<T>(N, C, H, W, x.data(), stages.data(), int(stages.size()), AugKey{0, 0, ids.data(), 1},
                                y0.data(), nullptr);
        ok = ok && same_bits(y0, y1) != keyed;
      }
    }
  }
  printf("augment %-22s %s C%ld %ldx%ld -> %ldx%ld: %s\n", name, sizeof(T) == 4 ? "f32" : "f64", (long)C, (long)H,
         (long)W, (long)P, (long)Q, ok ? "bit-exact" : "DIFFERENT");
  CHECK(name, ok);
}

template <class T>
void aug_cases() {
  const int64_t H = 6, W = 7;
  aug_case<T>("flip", 3, H, W, {aug_stage(kHFlip, 0x11, {0.5}, H, W)});
  aug_case<T>("crop pad 2", 3, H, W, {aug_stage(kCrop, 0x12, {2}, 5, 6)});
  aug_case<T>("resized crop", 3, H, W, {aug_stage(kResizedCrop, 0x13, {0.08, 1.0, 3 / 4.0, 4 / 3.0}, 4, 9)});
  // ratio (3, 4) cannot fit a 6 x 7 image at this area: every try fails, the fallback central crop is used
  aug_case<T>("resized crop fallback", 3, H, W, {aug_stage(kResizedCrop, 0x13, {0.9, 1.0, 3.0, 4.0}, 5, 5)},
              false);
  aug_case<T>("jitter rgb", 3, H, W, {aug_stage(kJitter, 0x14, {0.4, 0.4, 0.4}, H, W)});
  aug_case<T>("jitter gray", 1, H, W, {aug_stage(kJitter, 0x24, {0.3, 0.5, 0.0}, H, W)});
  aug_case<T>("jitter brightness C2", 2, H, W, {aug_stage(kJitter, 0x34, {0.3, 0.0, 0.0}, H, W)});
  aug_case<T>("lighting", 3, H, W, {aug_stage(kLighting, 0x15, {0.1}, H, W)});
  aug_case<T>("affine", 3, H, W, {aug_stage(kAffine, 0x16, {30.0, 0.1, 0.2, 0.8, 1.2, 0.5}, H, W)});
  aug_case<T>("pipeline of 5", 3, H, W,
            {aug_stage(kCrop, 0x112, {1}, 5, 5), aug_stage(kHFlip, 0x121, {0.5}, 5, 5), aug_stage(kJitter, 0x134, {0.2, 0.3, 0.4}, 5, 5),
             aug_stage(kAffine, 0x146, {10.0, 0.1, 0.1, 0.9, 1.1, 0.0}, 5, 5), aug_stage(kResizedCrop, 0x153, {0.5, 1.0, 0.75, 1.33}, 4, 3)});
}

}  // namespace

EMU_CASE(augment) {
  aug_cases<float>();
  aug_cases<double>();
}
