// CPU augmentation (see augment.h for the semantics and the random-stream layout). One OpenMP region per
// batch runs every stage of a pipeline on one sample at a time, in thread-local buffers (dynamic chunks of 8,
// so a thread the OS delays on a shared machine does not hold up the batch). Each sample draws from its own
// Philox streams and writes only its own output, so the result is identical at any thread count. Arithmetic is
// in double, rounded to T once per stage, so float32 and float64 match a float64 numpy reference to ~1 ulp of T.
#include "ops/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/runtime.h"

namespace ck {

namespace {

// One plane (H, W) resampled at fractional source coordinates, bilinear with half-pixel centres, as
// torch's upsample_bilinear2d (align_corners=False): src = (dst + 0.5) * in / out - 0.5, clamped at 0;
// the second neighbour is clamped to the last row/column.
struct Lerp {
  int64_t i0, i1;
  double w1;
};

std::vector<Lerp> resize_taps(int64_t out, int64_t in, int64_t origin) {
  std::vector<Lerp> taps(static_cast<size_t>(out));
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (int64_t o = 0; o < out; ++o) {
    double src = (o + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    int64_t i0 = static_cast<int64_t>(src);
    if (i0 > in - 1) i0 = in - 1;
    const int64_t i1 = i0 < in - 1 ? i0 + 1 : i0;
    taps[static_cast<size_t>(o)] = Lerp{origin + i0, origin + i1, src - static_cast<double>(i0)};
  }
  return taps;
}

// ---- one stage on one sample: x (C, H, W) -> y (C, P, Q); rec gets the drawn values ----

template <typename T>
void hflip_one(const AugStage& s, SampleRng& g, int64_t C, int64_t H, int64_t W, const T* x, T* y, double* rec) {
  const bool flip = sample_hflip(g, s.a[0]);
  rec[0] = flip;
  if (!flip) {
    std::memcpy(y, x, sizeof(T) * static_cast<size_t>(C * H * W));
    return;
  }
  for (int64_t r = 0; r < C * H; ++r) {
    const T* xr = x + r * W;
    T* yr = y + r * W;
    for (int64_t j = 0; j < W; ++j) yr[j] = xr[W - 1 - j];
  }
}

template <typename T>
void crop_one(const AugStage& s, SampleRng& g, int64_t C, int64_t H, int64_t W, const T* x, T* y, double* rec) {
  const int64_t P = s.P, Q = s.Q, pad = static_cast<int64_t>(s.a[0]);
  int64_t oy, ox;
  sample_crop(g, H, W, P, Q, pad, &oy, &ox);
  rec[0] = static_cast<double>(oy);
  rec[1] = static_cast<double>(ox);
  // Output column j reads input column ox + j - pad; the valid run is [j0, j1), zeros elsewhere.
  const int64_t j0 = std::clamp<int64_t>(pad - ox, 0, Q), j1 = std::clamp<int64_t>(W + pad - ox, j0, Q);
  for (int64_t c = 0; c < C; ++c) {
    const T* xp = x + c * H * W;
    T* yp = y + c * P * Q;
    for (int64_t i = 0; i < P; ++i) {
      T* yr = yp + i * Q;
      const int64_t si = oy + i - pad;
      if (si < 0 || si >= H) {
        std::fill(yr, yr + Q, T(0));
        continue;
      }
      std::fill(yr, yr + j0, T(0));
      if (j1 > j0) std::memcpy(yr + j0, xp + si * W + (ox + j0 - pad), sizeof(T) * static_cast<size_t>(j1 - j0));
      std::fill(yr + j1, yr + Q, T(0));
    }
  }
}

template <typename T>
void resized_crop_one(const AugStage& s, SampleRng& g, int64_t C, int64_t H, int64_t W, const T* x, T* y, double* rec) {
  const int64_t P = s.P, Q = s.Q;
  int64_t top, left, h, w;
  sample_resized_crop(g, H, W, s.a[0], s.a[1], s.a[2], s.a[3], &top, &left, &h, &w);
  rec[0] = static_cast<double>(top);
  rec[1] = static_cast<double>(left);
  rec[2] = static_cast<double>(h);
  rec[3] = static_cast<double>(w);
  const std::vector<Lerp> ty = resize_taps(P, h, top), tx = resize_taps(Q, w, left);
  for (int64_t c = 0; c < C; ++c) {
    const T* xp = x + c * H * W;
    T* yp = y + c * P * Q;
    for (int64_t i = 0; i < P; ++i) {
      const Lerp& a = ty[static_cast<size_t>(i)];
      const T* r0 = xp + a.i0 * W;
      const T* r1 = xp + a.i1 * W;
      for (int64_t j = 0; j < Q; ++j) {
        const Lerp& b = tx[static_cast<size_t>(j)];
        const double top_v = (1.0 - b.w1) * r0[b.i0] + b.w1 * r0[b.i1];
        const double bot_v = (1.0 - b.w1) * r1[b.i0] + b.w1 * r1[b.i1];
        yp[i * Q + j] = static_cast<T>((1.0 - a.w1) * top_v + a.w1 * bot_v);
      }
    }
  }
}

template <typename T>
void jitter_one(const AugStage& s, SampleRng& g, int64_t C, int64_t H, int64_t W, const T* x, T* y, double* rec,
                std::vector<double>& v) {
  const int64_t plane = H * W, img = C * plane;
  int perm;
  double f[3];
  sample_jitter(g, s.a[0], s.a[1], s.a[2], &perm, &f[0], &f[1], &f[2]);
  rec[0] = perm;
  rec[1] = f[0];
  rec[2] = f[1];
  rec[3] = f[2];
  // Work in double: the three ops in sequence, rounded once at the end.
  v.assign(x, x + img);
  auto gray_at = [&](int64_t k) {
    return C == 3 ? 0.299 * v[k] + 0.587 * v[plane + k] + 0.114 * v[2 * plane + k] : v[k];
  };
  for (int step = 0; step < 3; ++step) {
    const int op = jitter_op(perm, step);
    if (s.a[op] == 0.0) continue;
    const double fac = f[op];
    if (op == 0) {
      for (double& e : v) e *= fac;
    } else if (op == 1) {
      double sum = 0;
      for (int64_t k = 0; k < plane; ++k) sum += gray_at(k);
      const double m = (1.0 - fac) * (sum / static_cast<double>(plane));
      for (double& e : v) e = fac * e + m;
    } else {  // saturation (C == 3, checked by the caller)
      for (int64_t k = 0; k < plane; ++k) {
        const double gk = (1.0 - fac) * gray_at(k);
        for (int64_t c = 0; c < 3; ++c) v[c * plane + k] = fac * v[c * plane + k] + gk;
      }
    }
  }
  for (int64_t k = 0; k < img; ++k) y[k] = static_cast<T>(v[k]);
}

template <typename T>
void lighting_one(const AugStage& s, SampleRng& g, int64_t C, int64_t H, int64_t W, const T* x, T* y, double* rec) {
  const int64_t plane = H * W;
  sample_lighting(g, C, s.a[0], rec);
  for (int64_t c = 0; c < C; ++c) {
    double delta = 0;
    for (int64_t k = 0; k < C; ++k) delta += s.eigvec[c * C + k] * rec[k] * s.eigval[k];
    const T* xp = x + c * plane;
    T* yp = y + c * plane;
    for (int64_t k = 0; k < plane; ++k) yp[k] = static_cast<T>(xp[k] + delta);
  }
}

template <typename T>
void affine_one(const AugStage& s, SampleRng& g, int64_t C, int64_t H, int64_t W, const T* x, T* y, double* rec) {
  const int64_t plane = H * W;
  const double cy = (H - 1) * 0.5, cx = (W - 1) * 0.5, fill = s.a[5];
  sample_affine(g, H, W, s.a[0], s.a[1], s.a[2], s.a[3], s.a[4], rec);
  const double a = rec[0] * (3.141592653589793 / 180.0), cs = std::cos(a) / rec[3], sn = std::sin(a) / rec[3];
  for (int64_t i = 0; i < H; ++i) {
    for (int64_t j = 0; j < W; ++j) {
      // Inverse map of a counter-clockwise (on screen, rows pointing down) rotation by `a`.
      const double dy = i - cy - rec[1], dx = j - cx - rec[2];
      const double sy = cy + cs * dy + sn * dx, sx = cx - sn * dy + cs * dx;
      const double fy = std::floor(sy), fx = std::floor(sx);
      const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
      const double wy = sy - fy, wx = sx - fx;
      const bool in_y0 = y0 >= 0 && y0 < H, in_y1 = y0 + 1 >= 0 && y0 + 1 < H;
      const bool in_x0 = x0 >= 0 && x0 < W, in_x1 = x0 + 1 >= 0 && x0 + 1 < W;
      for (int64_t c = 0; c < C; ++c) {
        const T* xp = x + c * plane;
        const double v00 = in_y0 && in_x0 ? double(xp[y0 * W + x0]) : fill;
        const double v01 = in_y0 && in_x1 ? double(xp[y0 * W + x0 + 1]) : fill;
        const double v10 = in_y1 && in_x0 ? double(xp[(y0 + 1) * W + x0]) : fill;
        const double v11 = in_y1 && in_x1 ? double(xp[(y0 + 1) * W + x0 + 1]) : fill;
        const double v = (1 - wy) * ((1 - wx) * v00 + wx * v01) + wy * ((1 - wx) * v10 + wx * v11);
        y[c * plane + i * W + j] = static_cast<T>(v);
      }
    }
  }
}

}  // namespace

template <typename T>
void augment_pipeline_cpu(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, const AugStage* stages,
                          int num_stages, const AugKey& key, T* y, double* records) {
  // Plane sizes after each stage; the scratch buffers hold the largest intermediate.
  std::vector<int64_t> hs(static_cast<size_t>(num_stages) + 1), ws(hs.size());
  hs[0] = H;
  ws[0] = W;
  int64_t biggest = 0;
  for (int s = 0; s < num_stages; ++s) {
    hs[s + 1] = stages[s].P;
    ws[s + 1] = stages[s].Q;
    if (s + 1 < num_stages) biggest = std::max(biggest, C * hs[s + 1] * ws[s + 1]);
  }
  const int64_t in_img = C * H * W, out_img = C * hs[num_stages] * ws[num_stages];
  const int nt = key.num_threads > 0 ? key.num_threads : num_threads();
  // Nothing may throw out of an OpenMP region (that terminates the process): an allocation failure is caught per sample
  // and rethrown after it.
  ErrorSlot err;
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> buf[2];
    std::vector<double> scratch;
    bool ready = true;
    try {
      buf[0].resize(static_cast<size_t>(biggest));
      buf[1].resize(static_cast<size_t>(biggest));
    } catch (const std::exception& e) {
      err.capture(std::string("augment: ") + e.what());
      ready = false;
    }
#pragma omp for schedule(dynamic, 8)
    for (int64_t n = 0; n < N; ++n) {
      if (!ready) continue;
      try {
        const T* cur = x + n * in_img;
        for (int s = 0; s < num_stages; ++s) {
          const AugStage& st = stages[s];
          T* out = s + 1 == num_stages ? y + n * out_img : buf[s & 1].data();
          SampleRng g(key.seed, key.epoch, st.stream, static_cast<uint64_t>(key.ids[n]));
          double rec[kAugRecord] = {0};
          const int64_t h = hs[s], w = ws[s];
          switch (st.kind) {
            case kHFlip: hflip_one(st, g, C, h, w, cur, out, rec); break;
            case kCrop: crop_one(st, g, C, h, w, cur, out, rec); break;
            case kResizedCrop: resized_crop_one(st, g, C, h, w, cur, out, rec); break;
            case kJitter: jitter_one(st, g, C, h, w, cur, out, rec, scratch); break;
            case kLighting: lighting_one(st, g, C, h, w, cur, out, rec); break;
            default: affine_one(st, g, C, h, w, cur, out, rec); break;
          }
          if (records && s == 0) std::copy(rec, rec + kAugRecord, records + n * kAugRecord);
          cur = out;
        }
      } catch (const std::exception& e) {
        err.capture(std::string("augment: ") + e.what());
      }
    }
  }
  err.rethrow();
}

template void augment_pipeline_cpu<float>(int64_t, int64_t, int64_t, int64_t, const float*, const AugStage*, int,
                                          const AugKey&, float*, double*);
template void augment_pipeline_cpu<double>(int64_t, int64_t, int64_t, int64_t, const double*, const AugStage*, int,
                                           const AugKey&, double*, double*);

void philox_keys_cpu(int64_t n, uint64_t seed, uint32_t epoch, uint32_t stream, uint64_t* keys) {
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    SampleRng g(seed, epoch, stream, static_cast<uint64_t>(i));
    const uint64_t hi = g.next_u32();
    keys[i] = (hi << 32) | g.next_u32();
  }
}

}  // namespace ck
