// CPU kernels vs the CUDA kernels' source run under the host emulation shim (tools/cuda_emu/run.sh):
// conv2d, max-pool, dropout, ReLU and the optimizer steps.
#include "emu.h"
#include "ops/conv2d.h"
#include "ops/dropout.h"
#include "ops/maxpool2d.h"
#include "ops/optim.h"
#include "ops/relu.h"
using namespace ck;

template <class T> void conv_case(std::vector<int64_t> xs, std::vector<int64_t> ws, int64_t s, int64_t p, int64_t d, int64_t g) {
  auto P = make_conv2d_params("t", xs, ws, s, s, p, p, d, d, g);
  auto x = randn<T>(P.N * P.C * P.H * P.W), w = randn<T>(P.K * P.Cg() * P.R * P.S), b = randn<T>(P.K);
  auto dy = randn<T>(P.N * P.K * P.P * P.Q);
  std::vector<T> y1(dy.size()), y2(dy.size()), dx1(x.size()), dx2(x.size(), T(5)), dw1 = randn<T>(w.size()), dw2 = dw1, db1(P.K, 1), db2(P.K, 1);
  conv2d_fwd_cpu(P, x.data(), w.data(), b.data(), y1.data());
  conv2d_fwd_cuda(P, x.data(), w.data(), b.data(), y2.data(), S);
  conv2d_bwd_data_cpu(P, dy.data(), w.data(), dx1.data());
  conv2d_bwd_data_cuda(P, dy.data(), w.data(), dx2.data(), S);
  conv2d_bwd_weight_cpu(P, dy.data(), x.data(), dw1.data(), true);
  conv2d_bwd_weight_cuda(P, dy.data(), x.data(), dw2.data(), true, S);
  conv2d_bwd_bias_cpu(P.N, P.K, P.P * P.Q, dy.data(), db1.data(), true);
  conv2d_bwd_bias_cuda(P.N, P.K, P.P * P.Q, dy.data(), db2.data(), true, S);
  // |a - b| / (1 + |b|): both sides sum in T, in different orders (float32: ~1e-6 per unit of magnitude)
  double tol = sizeof(T) == 4 ? 1e-4 : 1e-10, at = 1.0;
  double e1 = maxrel(y2, y1, at), e2 = maxrel(dx2, dx1, at), e3 = maxrel(dw2, dw1, at), e4 = maxrel(db2, db1, at);
  printf("conv %s x(%ld,%ld,%ld,%ld) w(%ld,%ld,%ld,%ld) s%ld p%ld d%ld g%ld: fwd %.1e bwd_data %.1e bwd_weight %.1e bias %.1e\n",
         sizeof(T) == 4 ? "f32" : "f64", (long)xs[0], (long)xs[1], (long)xs[2], (long)xs[3], (long)ws[0], (long)ws[1],
         (long)ws[2], (long)ws[3], (long)s, (long)p, (long)d, (long)g, e1, e2, e3, e4);
  CHECK("conv", e1 < tol && e2 < tol && e3 < tol && e4 < tol);
}

template <class T> void pool_case(std::vector<int64_t> xs, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil) {
  auto P = make_maxpool2d_params("t", xs, k, k, s, s, p, p, d, d, ceil);
  std::uniform_int_distribution<int> U(-3, 3);
  std::vector<T> x(P.N * P.C * P.H * P.W);
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 23 == 5 ? T(NAN) : i % 31 == 7 ? -T(INFINITY) : T(U(rng));
  size_t no = P.N * P.C * P.P * P.Q;
  std::vector<T> y1(no), y2(no); std::vector<int64_t> i1(no), i2(no);
  maxpool2d_fwd_cpu(P, x.data(), y1.data(), i1.data());
  maxpool2d_fwd_cuda(P, x.data(), y2.data(), i2.data(), S);
  bool same = i1 == i2;
  for (size_t i = 0; i < no; ++i) same = same && (y1[i] == y2[i] || (std::isnan(y1[i]) && std::isnan(y2[i])));
  auto dy = randn<T>(no);
  std::vector<T> dx1(x.size()), dx2(x.size(), T(9));
  maxpool2d_bwd_cpu(P.N * P.C, P.H * P.W, P.P * P.Q, dy.data(), i1.data(), dx1.data());
  maxpool2d_bwd_cuda(P.N * P.C, P.H * P.W, P.P * P.Q, dy.data(), i2.data(), dx2.data(), S);
  int most = 0;  // the most adds into one cell (see scatter_sum_err_over_bound)
  double e = scatter_sum_err_over_bound(P.N * P.C, P.H * P.W, P.P * P.Q, dy, i1, dx2, dx1, &most);
  printf("maxpool k%ld s%ld p%ld d%ld ceil%d: fwd %s, bwd err/bound %.2f (up to %d adds per cell)\n", (long)k, (long)s,
         (long)p, (long)d, int(ceil), same ? "equal" : "DIFFERENT", e, most);
  CHECK("maxpool", same && e <= 1);
}

template <class T> void dropout_case(int64_t n, double p, uint64_t seed, uint64_t off) {
  auto x = randn<T>(n); if (n > 3) x[3] = T(NAN);
  std::vector<T> y1(n), y2(n), dx1(n), dx2(n); std::vector<uint8_t> m1(n), m2(n);
  dropout_fwd_cpu(n, x.data(), p, seed, off, y1.data(), m1.data());
  dropout_fwd_cuda(n, x.data(), p, seed, off, y2.data(), m2.data(), S);
  bool same = m1 == m2;
  for (int64_t i = 0; i < n; ++i) same = same && (std::memcmp(&y1[i], &y2[i], sizeof(T)) == 0);
  dropout_bwd_cpu(n, x.data(), m1.data(), p, dx1.data());
  dropout_bwd_cuda(n, x.data(), m1.data(), p, dx2.data(), S);
  for (int64_t i = 0; i < n; ++i) same = same && (std::memcmp(&dx1[i], &dx2[i], sizeof(T)) == 0);
  CHECK("dropout bit-exact", same);
}

template <class T> void optim_cases() {
  const int64_t n = 1031;
  double worst = 0;
  for (int mode = 0; mode < 4; ++mode) {
    GradPrep<T> c{T(mode & 2 ? 0.5 : 1), T(mode & 2 ? 0.3 : INFINITY), T(1e-2), T(mode & 1 ? 1e-3 : 0)};
    for (int rule = 0; rule < 7; ++rule) {
      auto p1 = randn<T>(n), g = randn<T>(n), s1a = randn<T>(n), s1b = randn<T>(n), s1c = randn<T>(n);
      for (auto& e : s1a) e = std::fabs(e) + 1; for (auto& e : s1b) e = T(0.1) * std::fabs(e); for (auto& e : s1c) e = std::fabs(e);
      // (as tests/ops/test_optim_steps.py: RMSProp-centered square_avg - grad_avg^2 stays well away from 0)
      auto p2 = p1; auto s2a = s1a, s2b = s1b, s2c = s1c;
      for (int t = 0; t < 3; ++t) {
        switch (rule) {
          case 0: { SgdArgs a{-0.1, 0.9, 0.9, false, t == 0}; sgd_step_cpu(n, p1.data(), g.data(), s1a.data(), a, c); sgd_step_cuda(n, p2.data(), g.data(), s2a.data(), a, c, S); break; }
          case 1: { SgdArgs a{-0.1, 0.9, 1.0, true, t == 0}; sgd_step_cpu(n, p1.data(), g.data(), s1a.data(), a, c); sgd_step_cuda(n, p2.data(), g.data(), s2a.data(), a, c, S); break; }
          case 2: { AdagradArgs a{-0.01, 1e-10}; adagrad_step_cpu(n, p1.data(), g.data(), s1a.data(), a, c); adagrad_step_cuda(n, p2.data(), g.data(), s2a.data(), a, c, S); break; }
          case 3: { RmspropArgs a{-0.01, 0.99, 1e-8, 0.9}; rmsprop_step_cpu(n, p1.data(), g.data(), s1a.data(), s1b.data(), s1c.data(), a, c); rmsprop_step_cuda(n, p2.data(), g.data(), s2a.data(), s2b.data(), s2c.data(), a, c, S); break; }
          case 4: { RmspropArgs a{-0.01, 0.99, 1e-8, 0.0}; rmsprop_step_cpu(n, p1.data(), g.data(), s1a.data(), (T*)nullptr, (T*)nullptr, a, c); rmsprop_step_cuda(n, p2.data(), g.data(), s2a.data(), (T*)nullptr, (T*)nullptr, a, c, S); break; }
          case 5: { AdamArgs a{0.9, 0.999, 1e-8, -1e-3 / (1 - std::pow(0.9, t + 1)), std::sqrt(1 - std::pow(0.999, t + 1)), 1.0}; adam_step_cpu(n, p1.data(), g.data(), s1a.data(), s1c.data(), s1b.data(), a, c); adam_step_cuda(n, p2.data(), g.data(), s2a.data(), s2c.data(), s2b.data(), a, c, S); break; }
          case 6: { AdamArgs a{0.9, 0.999, 1e-8, -1e-3 / (1 - std::pow(0.9, t + 1)), std::sqrt(1 - std::pow(0.999, t + 1)), 1 - 1e-5}; adam_step_cpu(n, p1.data(), g.data(), s1a.data(), s1c.data(), (T*)nullptr, a, c); adam_step_cuda(n, p2.data(), g.data(), s2a.data(), s2c.data(), (T*)nullptr, a, c, S); break; }
        }
      }
      // |a - b| / (1 + |b|): numpy assert_allclose(rtol=atol=1e-6) passes iff this is <= 1e-6
      double e = std::max({maxrel(p2, p1, 1.0), maxrel(s2a, s1a, 1.0), maxrel(s2b, s1b, 1.0), maxrel(s2c, s1c, 1.0)});
      if (e > 1e-6) printf("  optim rule %d mode %d: %.1e\n", rule, mode, e);
      worst = std::max(worst, e);
    }
  }
  printf("optim %s: worst relative difference %.1e\n", sizeof(T) == 4 ? "f32" : "f64", worst);
  CHECK("optim", worst < 1e-6);
  for (int64_t m : {0L, 1L, 255L, 256L, 20011L}) {
    auto g = randn<T>(m);
    bool f1; double s1 = grad_sumsq_cpu(m, g.data(), &f1);
    std::vector<double> ws(grad_sumsq_workspace_cuda()), out(2);
    grad_sumsq_cuda(m, g.data(), ws.data(), out.data(), S);
    CHECK("sumsq", std::fabs(out[0] - s1) <= 1e-12 * (1 + s1) && out[1] == 1.0 && f1);
    if (m) { g[m / 2] = T(NAN); grad_sumsq_cuda(m, g.data(), ws.data(), out.data(), S); CHECK("sumsq nan", out[1] == 0.0); }
  }
  auto q1 = randn<T>(33 * 36); for (auto& e : q1) e *= 3; auto q2 = q1;
  maxnorm_rows_cpu(33, 36, q1.data(), 2.0); maxnorm_rows_cuda(33, 36, q2.data(), 2.0, S);
  CHECK("maxnorm", maxrel(q2, q1, 1e-6) < 1e-6);
  auto h1 = randn<T>(3001), h2 = h1;
  grad_scale_clamp_cpu(3001, h1.data(), 0.7, 0.5); grad_scale_clamp_cuda(3001, h2.data(), 0.7, 0.5, S);
  CHECK("scale_clamp", h1 == h2);
}

template <class T> void core_cases() {
  conv_case<T>({2, 3, 8, 8}, {4, 3, 3, 3}, 1, 1, 1, 1);
  conv_case<T>({2, 4, 9, 7}, {6, 2, 3, 2}, 2, 1, 2, 2);
  conv_case<T>({1, 6, 5, 5}, {6, 1, 3, 3}, 1, 1, 1, 6);
  conv_case<T>({3, 16, 6, 6}, {70, 16, 1, 1}, 1, 0, 1, 1);
  conv_case<T>({2, 8, 15, 13}, {8, 4, 5, 5}, 3, 2, 2, 2);
  conv_case<T>({8, 4, 16, 16}, {8, 4, 3, 3}, 1, 1, 1, 1);  // 2048-long reduction: split-K in the weight pass
  pool_case<T>({2, 3, 8, 8}, 2, 2, 0, 1, false);
  pool_case<T>({2, 3, 9, 7}, 3, 2, 1, 1, false);
  pool_case<T>({1, 2, 11, 10}, 3, 2, 1, 2, true);
  pool_case<T>({1, 1, 5, 5}, 3, 1, 1, 1, false);
  for (int64_t n : {1L, 3L, 4L, 5L, 1027L}) for (double p : {0.0, 0.1, 0.5, 0.9}) {
    dropout_case<T>(n, p, 0, 0); dropout_case<T>(n, p, 123456789, 7); dropout_case<T>(n, p, ~0ull, (1ull << 40) + 3);
  }
  printf("dropout %s: masks, y and dx compared bit for bit\n", sizeof(T) == 4 ? "f32" : "f64");
  std::vector<T> x = randn<T>(1001), y1(1001), y2(1001); x[5] = T(NAN);
  relu_fwd_cpu(1001, x.data(), y1.data()); relu_fwd_cuda(1001, x.data(), y2.data(), S);
  CHECK("relu", std::memcmp(y1.data(), y2.data(), sizeof(T) * 1001) == 0);
}

EMU_CASE(core) { core_cases<float>(); core_cases<double>(); }
EMU_CASE(optim) { optim_cases<float>(); optim_cases<double>(); }
