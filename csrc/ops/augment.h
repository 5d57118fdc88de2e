// Live data augmentation on NCHW batches: horizontal flip, random crop with padding (CIFAR-style), random
// resized crop (Szegedy et al. 2015 / torchvision), colour jitter, AlexNet PCA lighting noise (Krizhevsky
// et al. 2012, sec. 4.1) and small random affine (rotation + translation + scale, bilinear).
// Every random choice of sample n is drawn from Philox-4x32-10 keyed by (seed, epoch, ids[n], stream), so a
// batch is a pure function of those numbers: the same at any thread count, in any batch order, on resume.
// The samplers below are CK_HD (host and device) so a CUDA twin (augment.cu) can reuse them unchanged.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/philox.h"

struct CUstream_st;

namespace ck {

// ---- the per-sample random stream ----
// Word k of sample `id`'s stream is word (k % 4) of the Philox block with
//   counter = (lo(id), hi(id), epoch, (stream << 8) | (k / 4)),  key = (lo(seed), hi(seed)).
// Draws are taken in a fixed order by each sampler (documented there), so a stream never depends on
// how many threads ran or which other samples were in the batch.
struct SampleRng {
  uint64_t seed, id;
  uint32_t epoch, stream;
  uint32_t block = 0;
  int word = 4;
  Philox4 r{};

  CK_HD SampleRng(uint64_t seed_, uint32_t epoch_, uint32_t stream_, uint64_t id_)
      : seed(seed_), id(id_), epoch(epoch_), stream(stream_) {}

  CK_HD uint32_t next_u32() {
    if (word == 4) {
      r = philox4x32_10(static_cast<uint32_t>(id), static_cast<uint32_t>(id >> 32), epoch,
                        (stream << 8) | (block & 0xFFu), static_cast<uint32_t>(seed),
                        static_cast<uint32_t>(seed >> 32));
      ++block;
      word = 0;
    }
    return r.v[word++];
  }
  // Uniform on [0, 1) with 32 random bits (exact in double).
  CK_HD double uniform() { return next_u32() * 2.3283064365386963e-10; }
  CK_HD double uniform(double a, double b) { return a + (b - a) * uniform(); }
  // Integer uniform on [lo, hi] (hi >= lo) by the multiply-shift map (Lemire 2019) without rejection:
  // the bias is below (hi - lo + 1) / 2^32, irrelevant for image sizes, and it costs exactly one word.
  CK_HD int64_t randint(int64_t lo, int64_t hi) {
    const uint64_t range = static_cast<uint64_t>(hi - lo + 1);
    return lo + static_cast<int64_t>((static_cast<uint64_t>(next_u32()) * range) >> 32);
  }
  // Standard normal by Box-Muller (two words; 1 - u lies in (0, 1], so the log is finite).
  CK_HD double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

// Round half away from zero (std::round), written out so host and device agree.
CK_HD int64_t round_half_away(double v) {
  return static_cast<int64_t>(v < 0 ? -std::floor(-v + 0.5) : std::floor(v + 0.5));
}

// ---- samplers: one per transform, each a pure function of its SampleRng ----

// Flip iff u < p (one word).
CK_HD bool sample_hflip(SampleRng& g, double p) { return g.uniform() < p; }

// Offsets (oy, ox) of a P x Q window in the zero-padded (H + 2 pad) x (W + 2 pad) image: two words,
// oy first. Requires P <= H + 2 pad, Q <= W + 2 pad.
CK_HD void sample_crop(SampleRng& g, int64_t H, int64_t W, int64_t P, int64_t Q, int64_t pad, int64_t* oy,
                       int64_t* ox) {
  *oy = g.randint(0, H + 2 * pad - P);
  *ox = g.randint(0, W + 2 * pad - Q);
}

// torchvision's RandomResizedCrop.get_params: up to 10 attempts, each drawing 4 words in this order:
// area fraction ~ U(scale), log aspect ~ U(log ratio), then top, left (the last two are drawn on every
// attempt, used only by the accepted one). w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)),
// accepted when 0 < w <= W and 0 < h <= H. Fallback: the central crop clamped to the ratio range.
CK_HD void sample_resized_crop(SampleRng& g, int64_t H, int64_t W, double scale_lo, double scale_hi, double ratio_lo,
                               double ratio_hi, int64_t* top, int64_t* left, int64_t* h, int64_t* w) {
  const double area = static_cast<double>(H) * static_cast<double>(W);
  const double lr0 = std::log(ratio_lo), lr1 = std::log(ratio_hi);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * g.uniform(scale_lo, scale_hi);
    const double aspect = std::exp(g.uniform(lr0, lr1));
    const uint32_t u_top = g.next_u32(), u_left = g.next_u32();
    const int64_t ww = round_half_away(std::sqrt(target * aspect));
    const int64_t hh = round_half_away(std::sqrt(target / aspect));
    if (ww > 0 && ww <= W && hh > 0 && hh <= H) {
      *h = hh;
      *w = ww;
      *top = static_cast<int64_t>((static_cast<uint64_t>(u_top) * static_cast<uint64_t>(H - hh + 1)) >> 32);
      *left = static_cast<int64_t>((static_cast<uint64_t>(u_left) * static_cast<uint64_t>(W - ww + 1)) >> 32);
      return;
    }
  }
  const double in_ratio = static_cast<double>(W) / static_cast<double>(H);
  int64_t hh = H, ww = W;
  if (in_ratio < ratio_lo) {
    ww = W;
    hh = round_half_away(ww / ratio_lo);
  } else if (in_ratio > ratio_hi) {
    hh = H;
    ww = round_half_away(hh * ratio_hi);
  }
  if (hh < 1) hh = 1;
  if (ww < 1) ww = 1;
  if (hh > H) hh = H;
  if (ww > W) ww = W;
  *h = hh;
  *w = ww;
  *top = (H - hh) / 2;
  *left = (W - ww) / 2;
}

// Colour jitter: 4 words in this order: the order of the three ops (one of the 6 permutations, numbered
// as itertools.permutations((0, 1, 2)): 0 brightness, 1 contrast, 2 saturation), then the brightness,
// contrast and saturation factors, each ~ U(max(0, 1 - s), 1 + s). All four are always drawn.
CK_HD void sample_jitter(SampleRng& g, double brightness, double contrast, double saturation, int* perm, double* fb,
                         double* fc, double* fs) {
  *perm = static_cast<int>(g.randint(0, 5));
  const double b = g.uniform(), c = g.uniform(), s = g.uniform();
  auto lo = [](double v) { return v < 1.0 ? 1.0 - v : 0.0; };
  *fb = lo(brightness) + (1.0 + brightness - lo(brightness)) * b;
  *fc = lo(contrast) + (1.0 + contrast - lo(contrast)) * c;
  *fs = lo(saturation) + (1.0 + saturation - lo(saturation)) * s;
}

// The 6 orders of (brightness, contrast, saturation), as itertools.permutations((0, 1, 2)).
CK_HD int jitter_op(int perm, int k) {
  constexpr int kOrders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  return kOrders[perm][k];
}

// PCA lighting: alpha_c ~ N(0, alphastd^2) for c = 0..C-1, two words each (Box-Muller), in channel order.
CK_HD void sample_lighting(SampleRng& g, int64_t C, double alphastd, double* alpha) {
  for (int64_t c = 0; c < C; ++c) alpha[c] = alphastd * g.normal();
}

// Affine: 4 words in this order: angle ~ U(-degrees, degrees), ty ~ U(-th, th) * H, tx ~ U(-tw, tw) * W,
// scale ~ U(scale_lo, scale_hi). params = (angle in degrees, ty, tx, scale).
CK_HD void sample_affine(SampleRng& g, int64_t H, int64_t W, double degrees, double th, double tw, double scale_lo,
                         double scale_hi, double* params) {
  params[0] = g.uniform(-degrees, degrees);
  params[1] = g.uniform(-th, th) * static_cast<double>(H);
  params[2] = g.uniform(-tw, tw) * static_cast<double>(W);
  params[3] = g.uniform(scale_lo, scale_hi);
}

// ---- the batch kernel ----
// A pipeline of stages runs over x (N, C, H, W) -> y (N, C, P, Q) in ONE OpenMP region: each sample passes
// through every stage in thread-local buffers, so a Compose of k transforms costs one fork/join, not k (on a
// busy 2-core machine each extra region costs milliseconds waiting for the second thread to be scheduled).
// Intermediates are stored in T between stages, exactly as k separate calls would store them, so the fused
// result equals the unfused one bit for bit. Sample n of stage s draws from the stream
// (seed, epoch, ids[n], stages[s].stream). One sample per iteration, dynamic chunks of 8 (a thread the OS
// delays does not hold up the batch); num_threads <= 0 means the current OpenMP default.
enum AugKind : int { kHFlip = 1, kCrop = 2, kResizedCrop = 3, kJitter = 4, kLighting = 5, kAffine = 6 };

struct AugStage {
  int kind;
  uint32_t stream;                 // the Philox stream word (the Python layer folds the transform's kind into it)
  double a[6];                     // flip: p | crop: pad | resized crop: scale lo, hi, ratio lo, hi | jitter: b, c, s |
                                   // lighting: alphastd | affine: degrees, t_h, t_w, scale lo, hi, fill
  int64_t P, Q;                    // output plane (equal to the input plane except for the two crops)
  const double* eigval = nullptr;  // lighting: (C,) and (C, C) with eigenvectors as columns
  const double* eigvec = nullptr;
};

struct AugKey {
  uint64_t seed;
  uint32_t epoch;
  const int64_t* ids;
  int num_threads;
};

// The values each stage drew for a sample (`records`, when not null, is (N, kAugRecord) and only the
// first stage's draws are kept):
//   flip: flipped | crop: oy, ox | resized crop: top, left, h, w | jitter: order, b, c, s |
//   lighting: alpha[0..C-1] | affine: angle (degrees), ty, tx, scale.
constexpr int kAugRecord = 16;  // also the largest C a lighting stage accepts

// Stage semantics, per sample x (C, H, W) -> y (C, P, Q); each writes y (=):
//   flip: mirror left-right.  crop: y[c, i, j] = xpad[c, oy + i, ox + j], xpad = x with `pad` zeros around.
//   resized crop: the box (top, left, h, w) resized to P x Q bilinearly with half-pixel centres
//     (align_corners=False, no antialiasing), exactly as torch.nn.functional.interpolate(mode="bilinear").
//   jitter: brightness x * b; contrast c * x + (1 - c) * mean(gray(x)); saturation s * x + (1 - s) * gray(x),
//     in the sampled order; gray = 0.299 R + 0.587 G + 0.114 B (ITU-R 601, as torchvision) or x itself when
//     C == 1. No clamping: the data may already be mean-subtracted. A strength of 0 skips its op exactly.
//   lighting: y[c] = x[c] + sum_k eigvec[c, k] * alpha[k] * eigval[k].
//   affine: output pixel p = (i, j) samples the input at c + R(-angle) (p - c - t) / scale, t = (ty, tx),
//     c = ((H - 1) / 2, (W - 1) / 2), bilinear, a neighbour outside the image contributing `fill`; a positive
//     angle turns the content counter-clockwise on screen (rows pointing down).
template <typename T>
void augment_pipeline_cpu(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, const AugStage* stages,
                          int num_stages, const AugKey& key, T* y, double* records);

// CUDA twin (augment.cu, built when CNNKIT_WITH_CUDA): x, y, key.ids, records and each lighting stage's
// eigval/eigvec are device pointers (stages itself is a host array; key.num_threads is ignored). Queued on
// `stream` (two launches per stage, stream-ordered scratch), not synchronised. Equal to
// augment_pipeline_cpu bit for bit for flip, crop, resized crop and jitter; lighting and affine use CUDA's
// log/cos/sin, which may differ from glibc's by an ulp or two (tolerance in docs/kernels.md).
template <typename T>
void augment_pipeline_cuda(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, const AugStage* stages,
                           int num_stages, const AugKey& key, T* y, double* records, CUstream_st* stream);

// keys[i] = a 64-bit Philox word pair for element i of stream (seed, epoch, stream): sorting the keys
// (stable, ties by index) gives the loader's per-epoch permutation.
void philox_keys_cpu(int64_t n, uint64_t seed, uint32_t epoch, uint32_t stream, uint64_t* keys);

}  // namespace ck
