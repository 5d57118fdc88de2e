// CUDA twin of augment.cpp, in the same order (augmentation on the GPU, so batches need not return
// to the host). Each stage is two launches on the caller's stream: a draw kernel (one thread per sample runs
// the CK_HD samplers of augment.h, unchanged, and writes the drawn values, plus what the CPU derives from them
// once per sample, to a small table) and an apply kernel (one thread per output element or pixel). The
// arithmetic is the CPU's, operation for operation, in double, rounded to T once per stage; this file is
// compiled with --fmad=false and augment.cpp with -ffp-contract=off (CMakeLists.txt), so neither side fuses
// a*b+c. Bit for bit equal to the CPU: flip, crop, resized crop and colour jitter (its contrast mean is summed
// by one thread per sample in the CPU's order). Lighting and affine call log/cos (Box-Muller) and cos/sin,
// where CUDA's libm and glibc may differ by an ulp or two; docs/kernels.md states the resulting tolerance.
// Compiled for sm_80/sm_90.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "common/cuda_check.cuh"
#include "ops/augment.h"

namespace ck {

namespace {

// A row of the draw table per sample: [0, 16) the record (augment.h), [16, 32) values derived from it.
constexpr int kParam = 2 * kAugRecord;

// resize_taps (augment.cpp) for one output coordinate o of `out`, reading `in` cells from `origin`.
__device__ __forceinline__ void resize_tap(int64_t o, int64_t out, int64_t in, int64_t origin, int64_t* i0, int64_t* i1,
                                           double* w1) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  double src = (o + 0.5) * scale - 0.5;
  if (src < 0) src = 0;
  int64_t a = static_cast<int64_t>(src);
  if (a > in - 1) a = in - 1;
  *i0 = origin + a;
  *i1 = origin + (a < in - 1 ? a + 1 : a);
  *w1 = src - static_cast<double>(a);
}

// ---- one stage: draw_kernel fills the table, then the transform's kernel writes y (C, P, Q) per sample ----

// x, y: (N, C, H, W). Writes y (=).
template <typename T>
__global__ void hflip_kernel(int64_t N, int64_t C, int64_t H, int64_t W, const T* __restrict__ x,
                             const double* __restrict__ params, T* __restrict__ y) {
  const int64_t total = N * C * H * W;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = e / (C * H * W), j = e % W;
    const bool flip = params[n * kParam] != 0.0;
    y[e] = flip ? x[e - j + (W - 1 - j)] : x[e];
  }
}

// x: (N, C, H, W), y: (N, C, P, Q), y[c, i, j] = xpad[c, oy + i, ox + j]. Writes y (=).
template <typename T>
__global__ void crop_kernel(int64_t N, int64_t C, int64_t H, int64_t W, int64_t P, int64_t Q, int64_t pad,
                            const T* __restrict__ x, const double* __restrict__ params, T* __restrict__ y) {
  const int64_t total = N * C * P * Q;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e % Q, i = (e / Q) % P, nc = e / (P * Q), n = nc / C;
    const double* p = params + n * kParam;
    const int64_t si = static_cast<int64_t>(p[0]) + i - pad, sj = static_cast<int64_t>(p[1]) + j - pad;
    y[e] = si >= 0 && si < H && sj >= 0 && sj < W ? x[(nc * H + si) * W + sj] : T(0);
  }
}

// x: (N, C, H, W), y: (N, C, P, Q): the box (top, left, h, w) resized bilinearly. Writes y (=).
template <typename T>
__global__ void resized_crop_kernel(int64_t N, int64_t C, int64_t H, int64_t W, int64_t P, int64_t Q,
                                    const T* __restrict__ x, const double* __restrict__ params, T* __restrict__ y) {
  const int64_t total = N * C * P * Q;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e % Q, i = (e / Q) % P, nc = e / (P * Q), n = nc / C;
    const double* p = params + n * kParam;
    int64_t ay0, ay1, bx0, bx1;
    double aw, bw;
    resize_tap(i, P, static_cast<int64_t>(p[2]), static_cast<int64_t>(p[0]), &ay0, &ay1, &aw);
    resize_tap(j, Q, static_cast<int64_t>(p[3]), static_cast<int64_t>(p[1]), &bx0, &bx1, &bw);
    const T* r0 = x + (nc * H + ay0) * W;
    const T* r1 = x + (nc * H + ay1) * W;
    const double top_v = (1.0 - bw) * r0[bx0] + bw * r0[bx1];
    const double bot_v = (1.0 - bw) * r1[bx0] + bw * r1[bx1];
    y[e] = static_cast<T>((1.0 - aw) * top_v + aw * bot_v);
  }
}

// Colour jitter on one pixel's nc channels v (nc = 3, or 1 when no op mixes channels), in double: the first
// `steps` ops of order `perm`, as jitter_one applies them image-wide. m is the contrast term (1 - c) mean.
__device__ __forceinline__ double jitter_gray(int nc, const double* v) {
  return nc == 3 ? 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2] : v[0];
}

__device__ __forceinline__ void jitter_ops(const double* a, const double* f, int perm, int steps, double m, int nc,
                                           double* v) {
  for (int step = 0; step < steps; ++step) {
    const int op = jitter_op(perm, step);
    if (a[op] == 0.0) continue;
    const double fac = f[op];
    if (op == 0) {
      for (int c = 0; c < nc; ++c) v[c] *= fac;
    } else if (op == 1) {
      for (int c = 0; c < nc; ++c) v[c] = fac * v[c] + m;
    } else {  // saturation (C == 3, checked by the binding)
      const double gk = (1.0 - fac) * jitter_gray(nc, v);
      for (int c = 0; c < nc; ++c) v[c] = fac * v[c] + gk;
    }
  }
}

// The contrast term of sample x (C, plane): the grey mean after the ops that precede contrast, summed in pixel
// order by this one thread, as the CPU sums it, so that it is the same double.
template <typename T>
__device__ double jitter_contrast_term(int64_t C, int64_t plane, const T* x, const double* a, const double* f,
                                       int perm) {
  int cstep = 0;
  while (jitter_op(perm, cstep) != 1) ++cstep;
  const int nc = C == 3 ? 3 : 1;
  double sum = 0;
  for (int64_t k = 0; k < plane; ++k) {
    double v[3];
    for (int c = 0; c < nc; ++c) v[c] = static_cast<double>(x[c * plane + k]);
    jitter_ops(a, f, perm, cstep, 0.0, nc, v);
    sum += jitter_gray(nc, v);
  }
  return (1.0 - f[1]) * (sum / static_cast<double>(plane));
}

// x, y: (N, C, H*W), one thread per pixel (n, k). Writes y (=).
template <typename T>
__global__ void jitter_kernel(int64_t N, int64_t C, int64_t plane, AugStage s, const T* __restrict__ x,
                              const double* __restrict__ params, T* __restrict__ y) {
  const int64_t total = N * plane;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = e / plane, k = e % plane;
    const double* p = params + n * kParam;
    const int perm = static_cast<int>(p[0]);
    const T* xs = x + n * C * plane + k;
    T* ys = y + n * C * plane + k;
    if (C == 3) {
      double v[3] = {static_cast<double>(xs[0]), static_cast<double>(xs[plane]), static_cast<double>(xs[2 * plane])};
      jitter_ops(s.a, p + 1, perm, 3, p[16], 3, v);
      for (int c = 0; c < 3; ++c) ys[c * plane] = static_cast<T>(v[c]);
    } else {  // no op mixes channels: each one is on its own
      for (int64_t c = 0; c < C; ++c) {
        double v = static_cast<double>(xs[c * plane]);
        jitter_ops(s.a, p + 1, perm, 3, p[16], 1, &v);
        ys[c * plane] = static_cast<T>(v);
      }
    }
  }
}

// x, y: (N, C, H*W), y[c] = x[c] + delta[c], delta from the draw table. Writes y (=).
template <typename T>
__global__ void lighting_kernel(int64_t N, int64_t C, int64_t plane, const T* __restrict__ x,
                                const double* __restrict__ params, T* __restrict__ y) {
  const int64_t total = N * C * plane;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t nc = e / plane, n = nc / C, c = nc % C;
    y[e] = static_cast<T>(x[e] + params[n * kParam + kAugRecord + c]);
  }
}

// x, y: (N, C, H, W), one thread per output pixel (n, i, j), bilinear with `fill` outside. Writes y (=).
template <typename T>
__global__ void affine_kernel(int64_t N, int64_t C, int64_t H, int64_t W, double fill, const T* __restrict__ x,
                              const double* __restrict__ params, T* __restrict__ y) {
  const int64_t plane = H * W, total = N * plane;
  const double cy = (H - 1) * 0.5, cx = (W - 1) * 0.5;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = e / plane, i = (e % plane) / W, j = e % W;
    const double* rec = params + n * kParam;
    const double cs = rec[kAugRecord], sn = rec[kAugRecord + 1];
    const double dy = i - cy - rec[1], dx = j - cx - rec[2];
    const double sy = cy + cs * dy + sn * dx, sx = cx - sn * dy + cs * dx;
    const double fy = floor(sy), fx = floor(sx);
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

// One thread per sample n of a stage with input plane (h, w): the sampler of augment.h, as the CPU's *_one
// calls it, then what the CPU computes from the draws once per sample. x is the stage's input (N, C, h, w),
// read only by jitter's contrast mean. Writes params (N, kParam) and, when not null, records (N, kAugRecord).
template <typename T>
__global__ void draw_kernel(int64_t N, int64_t C, int64_t h, int64_t w, AugStage s, uint64_t seed, uint32_t epoch,
                            const int64_t* __restrict__ ids, const T* __restrict__ x, double* __restrict__ params,
                            double* __restrict__ records) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    SampleRng g(seed, epoch, s.stream, static_cast<uint64_t>(ids[n]));
    double* rec = params + n * kParam;
    for (int k = 0; k < kParam; ++k) rec[k] = 0.0;
    switch (s.kind) {
      case kHFlip: rec[0] = sample_hflip(g, s.a[0]); break;
      case kCrop: {
        int64_t oy, ox;
        sample_crop(g, h, w, s.P, s.Q, static_cast<int64_t>(s.a[0]), &oy, &ox);
        rec[0] = static_cast<double>(oy);
        rec[1] = static_cast<double>(ox);
        break;
      }
      case kResizedCrop: {
        int64_t top, left, bh, bw;
        sample_resized_crop(g, h, w, s.a[0], s.a[1], s.a[2], s.a[3], &top, &left, &bh, &bw);
        rec[0] = static_cast<double>(top);
        rec[1] = static_cast<double>(left);
        rec[2] = static_cast<double>(bh);
        rec[3] = static_cast<double>(bw);
        break;
      }
      case kJitter: {
        int perm;
        sample_jitter(g, s.a[0], s.a[1], s.a[2], &perm, &rec[1], &rec[2], &rec[3]);
        rec[0] = perm;
        if (s.a[1] != 0.0) rec[kAugRecord] = jitter_contrast_term(C, h * w, x + n * C * h * w, s.a, rec + 1, perm);
        break;
      }
      case kLighting:
        sample_lighting(g, C, s.a[0], rec);
        for (int64_t c = 0; c < C; ++c) {
          double delta = 0;
          for (int64_t k = 0; k < C; ++k) delta += s.eigvec[c * C + k] * rec[k] * s.eigval[k];
          rec[kAugRecord + c] = delta;
        }
        break;
      default: {  // affine
        sample_affine(g, h, w, s.a[0], s.a[1], s.a[2], s.a[3], s.a[4], rec);
        const double a = rec[0] * (3.141592653589793 / 180.0);
        rec[kAugRecord] = cos(a) / rec[3];
        rec[kAugRecord + 1] = sin(a) / rec[3];
        break;
      }
    }
    if (records)
      for (int k = 0; k < kAugRecord; ++k) records[n * kAugRecord + k] = rec[k];
  }
}

}  // namespace

template <typename T>
void augment_pipeline_cuda(int64_t N, int64_t C, int64_t H, int64_t W, const T* x, const AugStage* stages,
                           int num_stages, const AugKey& key, T* y, double* records, CUstream_st* stream) {
  const char* op = "augment";
  if (N == 0 || num_stages == 0) return;
  // The largest intermediate between stages, stored in T as on the CPU (two ping-pong buffers).
  int64_t biggest = 0;
  for (int s = 0; s + 1 < num_stages; ++s) {
    const int64_t size = C * stages[s].P * stages[s].Q;
    if (size > biggest) biggest = size;
  }
  // One stream-ordered scratch allocation: the draw table, then the two buffers. No synchronisation; freed on
  // the stream even if a launch check throws.
  const size_t table = sizeof(double) * size_t(N * kParam), inter = sizeof(T) * size_t(N * biggest);
  cudak::StreamScratch ws(op, table + 2 * inter, stream);
  double* params = reinterpret_cast<double*>(ws.get());
  T* buf[2] = {reinterpret_cast<T*>(ws.get() + table), reinterpret_cast<T*>(ws.get() + table + inter)};
  const T* cur = x;
  int64_t h = H, w = W;
  for (int s = 0; s < num_stages; ++s) {
    const AugStage& st = stages[s];
    T* out = s + 1 == num_stages ? y : buf[s & 1];
    draw_kernel<T><<<cudak::blocks_for(N), cudak::kThreads, 0, stream>>>(N, C, h, w, st, key.seed, key.epoch, key.ids,
                                                                         cur, params, s == 0 ? records : nullptr);
    cudak::check_launch(op);
    const int64_t out_n = N * C * st.P * st.Q;
    switch (st.kind) {
      case kHFlip:
        hflip_kernel<T><<<cudak::blocks_for(out_n), cudak::kThreads, 0, stream>>>(N, C, h, w, cur, params, out);
        break;
      case kCrop:
        crop_kernel<T><<<cudak::blocks_for(out_n), cudak::kThreads, 0, stream>>>(
            N, C, h, w, st.P, st.Q, static_cast<int64_t>(st.a[0]), cur, params, out);
        break;
      case kResizedCrop:
        resized_crop_kernel<T>
            <<<cudak::blocks_for(out_n), cudak::kThreads, 0, stream>>>(N, C, h, w, st.P, st.Q, cur, params, out);
        break;
      case kJitter:
        jitter_kernel<T>
            <<<cudak::blocks_for(N * h * w), cudak::kThreads, 0, stream>>>(N, C, h * w, st, cur, params, out);
        break;
      case kLighting:
        lighting_kernel<T><<<cudak::blocks_for(out_n), cudak::kThreads, 0, stream>>>(N, C, h * w, cur, params, out);
        break;
      default:
        affine_kernel<T>
            <<<cudak::blocks_for(N * h * w), cudak::kThreads, 0, stream>>>(N, C, h, w, st.a[5], cur, params, out);
        break;
    }
    cudak::check_launch(op);
    cur = out;
    h = st.P;
    w = st.Q;
  }
  ws.free();
}

template void augment_pipeline_cuda<float>(int64_t, int64_t, int64_t, int64_t, const float*, const AugStage*, int,
                                           const AugKey&, float*, double*, CUstream_st*);
template void augment_pipeline_cuda<double>(int64_t, int64_t, int64_t, int64_t, const double*, const AugStage*, int,
                                            const AugKey&, double*, double*, CUstream_st*);

}  // namespace ck
