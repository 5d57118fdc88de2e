// CPU augmentation kernels (see augment.h for the semantics and the random-stream layout). OpenMP runs
// over the batch, one sample per iteration (dynamic chunks of 8, so a thread the OS delays on a shared machine
// does not hold up the batch): every sample draws from its own Philox stream and writes only
// its own output, so the result is identical at any thread count. Arithmetic is done in double and
// rounded once on store, so float32 and float64 agree with a float64 numpy reference to ~1 ulp of T.
#include "ops/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <omp.h>

namespace ck {

namespace {

int threads_for(const AugKey& key) { return key.num_threads > 0 ? key.num_threads : omp_get_max_threads(); }

SampleRng rng_for(const AugKey& key, int64_t n) {
  return SampleRng(key.seed, key.epoch, key.stream, static_cast<uint64_t>(key.ids[n]));
}

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

}  // namespace

template <typename T>
void hflip_cpu(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, double p, const AugKey& key, T* y,
               uint8_t* flipped) {
  const int64_t plane = H * W, img = C * plane;
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads_for(key))
  for (int64_t n = 0; n < N; ++n) {
    SampleRng g = rng_for(key, n);
    const bool flip = sample_hflip(g, p);
    if (flipped) flipped[n] = flip;
    const T* xs = x + n * img;
    T* ys = y + n * img;
    if (!flip) {
      std::memcpy(ys, xs, sizeof(T) * static_cast<size_t>(img));
      continue;
    }
    for (int64_t r = 0; r < C * H; ++r) {
      const T* xr = xs + r * W;
      T* yr = ys + r * W;
      for (int64_t j = 0; j < W; ++j) yr[j] = xr[W - 1 - j];
    }
  }
}

template <typename T>
void random_crop_cpu(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, int64_t P, int64_t Q, int64_t pad,
                     const AugKey& key, T* y, int64_t* offsets) {
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads_for(key))
  for (int64_t n = 0; n < N; ++n) {
    SampleRng g = rng_for(key, n);
    int64_t oy, ox;
    sample_crop(g, H, W, P, Q, pad, &oy, &ox);
    if (offsets) {
      offsets[2 * n] = oy;
      offsets[2 * n + 1] = ox;
    }
    // Output column j reads input column ox + j - pad; the valid run is [j0, j1), zeros elsewhere.
    const int64_t j0 = std::clamp<int64_t>(pad - ox, 0, Q), j1 = std::clamp<int64_t>(W + pad - ox, j0, Q);
    for (int64_t c = 0; c < C; ++c) {
      const T* xp = x + (n * C + c) * H * W;
      T* yp = y + (n * C + c) * P * Q;
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
}

template <typename T>
void random_resized_crop_cpu(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, int64_t P, int64_t Q,
                             double scale_lo, double scale_hi, double ratio_lo, double ratio_hi, const AugKey& key,
                             T* y, int64_t* boxes) {
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads_for(key))
  for (int64_t n = 0; n < N; ++n) {
    SampleRng g = rng_for(key, n);
    int64_t top, left, h, w;
    sample_resized_crop(g, H, W, scale_lo, scale_hi, ratio_lo, ratio_hi, &top, &left, &h, &w);
    if (boxes) {
      boxes[4 * n] = top;
      boxes[4 * n + 1] = left;
      boxes[4 * n + 2] = h;
      boxes[4 * n + 3] = w;
    }
    const std::vector<Lerp> ty = resize_taps(P, h, top), tx = resize_taps(Q, w, left);
    for (int64_t c = 0; c < C; ++c) {
      const T* xp = x + (n * C + c) * H * W;
      T* yp = y + (n * C + c) * P * Q;
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
}

template <typename T>
void color_jitter_cpu(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, double brightness, double contrast,
                      double saturation, const AugKey& key, T* y, double* params) {
  const int64_t plane = H * W, img = C * plane;
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads_for(key))
  for (int64_t n = 0; n < N; ++n) {
    SampleRng g = rng_for(key, n);
    int perm;
    double f[3];
    sample_jitter(g, brightness, contrast, saturation, &perm, &f[0], &f[1], &f[2]);
    if (params) {
      params[4 * n] = perm;
      params[4 * n + 1] = f[0];
      params[4 * n + 2] = f[1];
      params[4 * n + 3] = f[2];
    }
    const double strength[3] = {brightness, contrast, saturation};
    // Work in a double copy of the image: three ops in sequence, rounded once at the end.
    std::vector<double> v(x + n * img, x + (n + 1) * img);
    auto gray_at = [&](int64_t k) {
      return C == 3 ? 0.299 * v[k] + 0.587 * v[plane + k] + 0.114 * v[2 * plane + k] : v[k];
    };
    for (int step = 0; step < 3; ++step) {
      const int op = jitter_op(perm, step);
      if (strength[op] == 0.0) continue;
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
    T* ys = y + n * img;
    for (int64_t k = 0; k < img; ++k) ys[k] = static_cast<T>(v[k]);
  }
}

template <typename T>
void pca_lighting_cpu(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, double alphastd,
                      const double* eigval, const double* eigvec, const AugKey& key, T* y, double* alphas) {
  const int64_t plane = H * W;
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads_for(key))
  for (int64_t n = 0; n < N; ++n) {
    SampleRng g = rng_for(key, n);
    std::vector<double> alpha(static_cast<size_t>(C));
    sample_lighting(g, C, alphastd, alpha.data());
    if (alphas)
      for (int64_t k = 0; k < C; ++k) alphas[n * C + k] = alpha[static_cast<size_t>(k)];
    for (int64_t c = 0; c < C; ++c) {
      double delta = 0;
      for (int64_t k = 0; k < C; ++k) delta += eigvec[c * C + k] * alpha[static_cast<size_t>(k)] * eigval[k];
      const T* xp = x + (n * C + c) * plane;
      T* yp = y + (n * C + c) * plane;
      for (int64_t k = 0; k < plane; ++k) yp[k] = static_cast<T>(xp[k] + delta);
    }
  }
}

template <typename T>
void random_affine_cpu(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, double degrees, double th,
                       double tw, double scale_lo, double scale_hi, double fill, const AugKey& key, T* y,
                       double* params) {
  const int64_t plane = H * W;
  const double cy = (H - 1) * 0.5, cx = (W - 1) * 0.5;
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads_for(key))
  for (int64_t n = 0; n < N; ++n) {
    SampleRng g = rng_for(key, n);
    double prm[4];
    sample_affine(g, H, W, degrees, th, tw, scale_lo, scale_hi, prm);
    if (params)
      for (int k = 0; k < 4; ++k) params[4 * n + k] = prm[k];
    const double a = prm[0] * (3.141592653589793 / 180.0), cs = std::cos(a) / prm[3], sn = std::sin(a) / prm[3];
    for (int64_t i = 0; i < H; ++i) {
      for (int64_t j = 0; j < W; ++j) {
        // Inverse map of a counter-clockwise (on screen, rows pointing down) rotation by `a`.
        const double dy = i - cy - prm[1], dx = j - cx - prm[2];
        const double sy = cy + cs * dy + sn * dx, sx = cx - sn * dy + cs * dx;
        const double fy = std::floor(sy), fx = std::floor(sx);
        const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
        const double wy = sy - fy, wx = sx - fx;
        const bool in_y0 = y0 >= 0 && y0 < H, in_y1 = y0 + 1 >= 0 && y0 + 1 < H;
        const bool in_x0 = x0 >= 0 && x0 < W, in_x1 = x0 + 1 >= 0 && x0 + 1 < W;
        for (int64_t c = 0; c < C; ++c) {
          const T* xp = x + (n * C + c) * plane;
          const double v00 = in_y0 && in_x0 ? double(xp[y0 * W + x0]) : fill;
          const double v01 = in_y0 && in_x1 ? double(xp[y0 * W + x0 + 1]) : fill;
          const double v10 = in_y1 && in_x0 ? double(xp[(y0 + 1) * W + x0]) : fill;
          const double v11 = in_y1 && in_x1 ? double(xp[(y0 + 1) * W + x0 + 1]) : fill;
          const double v = (1 - wy) * ((1 - wx) * v00 + wx * v01) + wy * ((1 - wx) * v10 + wx * v11);
          y[(n * C + c) * plane + i * W + j] = static_cast<T>(v);
        }
      }
    }
  }
}

void philox_keys_cpu(int64_t n, uint64_t seed, uint32_t epoch, uint32_t stream, uint64_t* keys) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    SampleRng g(seed, epoch, stream, static_cast<uint64_t>(i));
    const uint64_t hi = g.next_u32();
    keys[i] = (hi << 32) | g.next_u32();
  }
}

#define CK_AUG_INSTANTIATE(T)                                                                                  \
  template void hflip_cpu<T>(int64_t, int64_t, int64_t, int64_t, const T*, double, const AugKey&, T*,          \
                             uint8_t*);                                                                        \
  template void random_crop_cpu<T>(int64_t, int64_t, int64_t, int64_t, const T*, int64_t, int64_t, int64_t,    \
                                   const AugKey&, T*, int64_t*);                                               \
  template void random_resized_crop_cpu<T>(int64_t, int64_t, int64_t, int64_t, const T*, int64_t, int64_t,     \
                                           double, double, double, double, const AugKey&, T*, int64_t*);       \
  template void color_jitter_cpu<T>(int64_t, int64_t, int64_t, int64_t, const T*, double, double, double,      \
                                    const AugKey&, T*, double*);                                               \
  template void pca_lighting_cpu<T>(int64_t, int64_t, int64_t, int64_t, const T*, double, const double*,        \
                                    const double*, const AugKey&, T*, double*);                                \
  template void random_affine_cpu<T>(int64_t, int64_t, int64_t, int64_t, const T*, double, double, double,     \
                                     double, double, double, const AugKey&, T*, double*);
CK_AUG_INSTANTIATE(float)
CK_AUG_INSTANTIATE(double)
#undef CK_AUG_INSTANTIATE

}  // namespace ck
