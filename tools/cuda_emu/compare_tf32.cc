// The TF32 conv path of conv2d.cu (wmma m16n16k8, emulated by tools/cuda_emu/mma.h) against the CPU kernels,
// all three passes. Tolerances are per element, from the standard bounds (Higham, Accuracy and Stability of
// Numerical Algorithms, ch. 3), with S = sum_i |a_i * b_i| over the n terms of an output and u = 2^-24:
//  - vs the CPU float32 conv: TF32 rounding (round to nearest, 11 significant bits: unit roundoff 2^-11) puts
//    each product within (2 * 2^-11 + 2^-22) |a b| of the exact one; both sides then add in float32
//    (<= (n + 2) u S each), so |tf32 - cpu32| <= (2^-10 + 2^-22 + 2 (n + 2) u) * S.
//  - vs a float64 conv of the TF32-rounded operands (S' over them): only the float32 accumulation is left,
//    |tf32 - ref| <= (n + 2) u * S', about 2^10 / n times tighter.
#include <cuda_runtime.h>
#include <mma.h>

#include <array>

#include "emu.h"
#include "ops/conv2d.h"
using namespace ck;

namespace {

// Round to TF32 written independently of the emulator's bit trick: keep 11 significant bits, ties away from
// zero (std::round), as cvt.rna.tf32.f32 does. For normal floats only.
float tf32_ref(float v) {
  if (!std::isfinite(v) || v == 0.0f) return v;
  int e;
  const double m = std::frexp(double(v), &e);  // |m| in [0.5, 1)
  return float(std::ldexp(std::round(std::ldexp(m, 11)), e - 11));
}

template <class T, class F> std::vector<T> map(const std::vector<float>& v, F f) {
  std::vector<T> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = T(f(v[i]));
  return o;
}
std::vector<double> absd(const std::vector<float>& v) { return map<double>(v, [](float a) { return std::fabs(double(a)); }); }
std::vector<double> tf32d(const std::vector<float>& v) { return map<double>(v, tf32_ref); }
std::vector<double> abs_tf32d(const std::vector<float>& v) {
  return map<double>(v, [](float a) { return std::fabs(double(tf32_ref(a))); });
}

// Worst err / bound over the elements, err = |got - want|, bound = coef * S (+ a tiny floor for S = 0).
template <class W>
double worst(const std::vector<float>& got, const std::vector<W>& want, const std::vector<double>& S, double coef) {
  double r = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - double(want[i])) / (coef * S[i] + 1e-30);
    if (!(e <= r)) r = e;
  }
  return r;
}

constexpr double kU = 1.0 / (1 << 24);
double coef_vs_fp32(double n) { return std::ldexp(1.0, -10) + std::ldexp(1.0, -22) + 2 * (n + 2) * kU; }
double coef_vs_rounded(double n) { return (n + 2) * kU; }

void tf32_conv_case(std::vector<int64_t> xs, std::vector<int64_t> ws, int64_t s, int64_t p, int64_t d, int64_t g) {
  auto P = make_conv2d_params("t", xs, ws, s, s, p, p, d, d, g);
  auto x = randn<float>(P.N * P.C * P.H * P.W), w = randn<float>(P.K * P.Cg() * P.R * P.S), b = randn<float>(P.K);
  auto dy = randn<float>(P.N * P.K * P.P * P.Q);
  const size_t ny = dy.size(), nx = x.size(), nw = w.size();
  // TF32 on the emulated GPU; accumulate=true onto dw0 as well, which must add exactly dw0 + dw.
  std::vector<float> yt(ny), dxt(nx, 5.0f), dwt(nw, 7.0f), dw0 = randn<float>(nw), dwa = dw0;
  conv2d_fwd_cuda(P, x.data(), w.data(), b.data(), yt.data(), S, true);
  conv2d_bwd_data_cuda(P, dy.data(), w.data(), dxt.data(), S, true);
  conv2d_bwd_weight_cuda(P, dy.data(), x.data(), dwt.data(), false, S, true);
  conv2d_bwd_weight_cuda(P, dy.data(), x.data(), dwa.data(), true, S, true);
  // the CPU in float32
  std::vector<float> yc(ny), dxc(nx), dwc(nw);
  conv2d_fwd_cpu(P, x.data(), w.data(), b.data(), yc.data());
  conv2d_bwd_data_cpu(P, dy.data(), w.data(), dxc.data());
  conv2d_bwd_weight_cpu(P, dy.data(), x.data(), dwc.data(), false);
  // S = sum |a_i b_i| per output: the float64 CPU conv of the absolute values (of the rounded operands for S')
  auto conv3 = [&](const std::vector<double>& X, const std::vector<double>& Wt, const std::vector<double>& B,
                   const std::vector<double>& DY) {
    std::vector<double> y(ny), dx(nx), dw(nw);
    conv2d_fwd_cpu(P, X.data(), Wt.data(), B.data(), y.data());
    conv2d_bwd_data_cpu(P, DY.data(), Wt.data(), dx.data());
    conv2d_bwd_weight_cpu(P, DY.data(), X.data(), dw.data(), false);
    return std::array<std::vector<double>, 3>{y, dx, dw};
  };
  auto bd = map<double>(b, [](float a) { return double(a); });
  auto Sa = conv3(absd(x), absd(w), absd(b), absd(dy));
  auto Sr = conv3(abs_tf32d(x), abs_tf32d(w), absd(b), abs_tf32d(dy));
  auto ref = conv3(tf32d(x), tf32d(w), bd, tf32d(dy));  // the bias is added in float32, not rounded
  const double n_fwd = double(P.Cg() * P.R * P.S) + 1, n_bd = double(P.Kg() * P.R * P.S),
               n_bw = double(P.N * P.P * P.Q) + 1;  // + 1: the bias, the split-K reduction
  const double e32[3] = {worst(yt, yc, Sa[0], coef_vs_fp32(n_fwd)), worst(dxt, dxc, Sa[1], coef_vs_fp32(n_bd)),
                         worst(dwt, dwc, Sa[2], coef_vs_fp32(n_bw))};
  const double e64[3] = {worst(yt, ref[0], Sr[0], coef_vs_rounded(n_fwd)),
                         worst(dxt, ref[1], Sr[1], coef_vs_rounded(n_bd)),
                         worst(dwt, ref[2], Sr[2], coef_vs_rounded(n_bw))};
  bool acc_exact = true;
  for (size_t i = 0; i < nw; ++i) acc_exact = acc_exact && dwa[i] == dw0[i] + dwt[i];
  printf("conv tf32 x(%ld,%ld,%ld,%ld) w(%ld,%ld,%ld,%ld) s%ld p%ld d%ld g%ld: err/bound vs cpu f32 %.2f %.2f %.2f, "
         "vs f64 of tf32 operands %.2f %.2f %.2f, accumulate %s\n",
         (long)xs[0], (long)xs[1], (long)xs[2], (long)xs[3], (long)ws[0], (long)ws[1], (long)ws[2], (long)ws[3],
         (long)s, (long)p, (long)d, (long)g, e32[0], e32[1], e32[2], e64[0], e64[1], e64[2],
         acc_exact ? "exact" : "DIFFERENT");
  CHECK("conv_tf32 vs cpu f32", e32[0] <= 1 && e32[1] <= 1 && e32[2] <= 1);
  CHECK("conv_tf32 vs f64 of tf32 operands", e64[0] <= 1 && e64[1] <= 1 && e64[2] <= 1);
  CHECK("conv_tf32 accumulate", acc_exact);
}

}  // namespace

EMU_CASE(conv_tf32) {
  // Rounding: the emulator's __float_to_tf32 (the kernel's) against tf32_ref, ties included.
  using nvcuda::wmma::__float_to_tf32;
  const float one = 1.0f;
  CHECK("tf32 tie away", __float_to_tf32(one + std::ldexp(1.0f, -11)) == one + std::ldexp(1.0f, -10));
  CHECK("tf32 tie away neg", __float_to_tf32(-(one + std::ldexp(1.0f, -11))) == -(one + std::ldexp(1.0f, -10)));
  CHECK("tf32 below half", __float_to_tf32(one + std::ldexp(1.0f, -12)) == one);
  CHECK("tf32 tie odd", __float_to_tf32(one + 3 * std::ldexp(1.0f, -11)) == one + std::ldexp(1.0f, -9));
  int mism = 0;
  std::uniform_int_distribution<int> E(-60, 60);
  for (float v : randn<float>(20000)) {
    v = std::ldexp(v, E(rng));
    mism += __float_to_tf32(v) != tf32_ref(v);
  }
  CHECK("tf32 rounding = reference", mism == 0);
  g_wmma_unrounded = 0;
  tf32_conv_case({2, 3, 8, 8}, {4, 3, 3, 3}, 1, 1, 1, 1);      // reduction 27: one full and one partial BK step
  tf32_conv_case({2, 4, 9, 7}, {6, 2, 3, 2}, 2, 1, 2, 2);      // groups, stride, dilation, non-square kernel
  tf32_conv_case({1, 6, 5, 5}, {6, 1, 3, 3}, 1, 1, 1, 6);      // depthwise
  tf32_conv_case({3, 16, 6, 6}, {70, 16, 1, 1}, 1, 0, 1, 1);   // K = 70: two row tiles, the second nearly empty
  tf32_conv_case({2, 8, 15, 13}, {8, 4, 5, 5}, 3, 2, 2, 2);
  tf32_conv_case({8, 4, 16, 16}, {8, 4, 3, 3}, 1, 1, 1, 1);    // 2048-long weight reduction: split-K (4 splits)
  // By hand: x = 1 + 2^-12 rounds to 1 in TF32, so every output is exactly its number of terms (float32: not).
  {
    auto P = make_conv2d_params("t", {2, 3, 6, 5}, {2, 3, 3, 3}, 1, 1, 0, 0, 1, 1, 1);
    std::vector<float> x(2 * 3 * 6 * 5, 1.0f + std::ldexp(1.0f, -12)), w(2 * 27, 1.0f), dy(2 * 2 * 4 * 3, 1.0f);
    std::vector<float> y(dy.size()), dw(w.size()), yc(dy.size());
    conv2d_fwd_cuda(P, x.data(), w.data(), (const float*)nullptr, y.data(), S, true);
    conv2d_bwd_weight_cuda(P, dy.data(), x.data(), dw.data(), false, S, true);
    conv2d_fwd_cpu(P, x.data(), w.data(), (const float*)nullptr, yc.data());
    bool ok = yc[0] != 27.0f;
    for (float v : y) ok = ok && v == 27.0f;
    for (float v : dw) ok = ok && v == 24.0f;  // N * P * Q = 2 * 4 * 3
    printf("conv tf32 by hand (x = 1 + 2^-12, w = 1): y = %.9g (float32 CPU %.9g), dw = %.9g\n", y[0], yc[0], dw[0]);
    CHECK("conv_tf32 by hand", ok);
  }
  printf("conv tf32: operands reaching mma_sync not rounded to TF32: %ld\n", g_wmma_unrounded.load());
  CHECK("conv_tf32 operands rounded", g_wmma_unrounded == 0);
}
