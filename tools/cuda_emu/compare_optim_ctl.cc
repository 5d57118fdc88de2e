// The optimizer steps through the device control block (OptimCtl, optim.h) under the host emulation, against
// the CPU steps with host scalars computed as python/cnnkit/optim/ computes them: two param groups, several
// steps of every rule, a non-finite gradient in the middle (every group's params and state bit-unchanged, the
// skip counter up once, the step counters not), clipping by global norm (with maximize's sign), by value, L1.
#include "emu.h"
#include "ops/optim.h"
using namespace ck;

namespace {

enum Rule { kSgd, kSgdNesterov, kAdagrad, kRmspropCentered, kRmsprop, kAdamAmsgrad, kAdamW, kRules };

// One param group on one side: params and three state arrays (the rule uses what it needs).
template <class T> struct Side {
  std::vector<T> p, a, b, c;
};

template <class T> Side<T> init_side(int64_t n) {
  Side<T> s{randn<T>(n), randn<T>(n), randn<T>(n), randn<T>(n)};
  // square_avg well above grad_avg^2 (RMSProp centered; as compare_core.cc), AdaGrad sums positive
  for (auto& e : s.a) e = std::fabs(e) + 1;
  for (auto& e : s.b) e = T(0.1) * std::fabs(e);
  for (auto& e : s.c) e = std::fabs(e);
  return s;
}

template <class T> bool bit_equal(const Side<T>& x, const Side<T>& y) {
  auto eq = [](const std::vector<T>& u, const std::vector<T>& v) {
    return std::memcmp(u.data(), v.data(), sizeof(T) * u.size()) == 0;
  };
  return eq(x.p, y.p) && eq(x.a, y.a) && eq(x.b, y.b) && eq(x.c, y.c);
}

constexpr double kLr = 0.05, kBeta1 = 0.9, kBeta2 = 0.999, kLrDecay = 0.1;

// One rule's step on [0, n) of one group. ctl.block == nullptr: the CPU kernel with the host scalars for step
// t (1-based), as cnnkit.optim passes them; else the CUDA kernel with the step-free values (OptimCtl's contract).
template <class T>
void rule_step(Rule r, int64_t n, Side<T>& s, const T* g, const GradPrep<T>& prep, double t, bool first,
               const OptimCtl& k) {
  const bool dev = k.block != nullptr;
  switch (r) {
    case kSgd:
    case kSgdNesterov: {
      const SgdArgs a{-kLr, 0.9, r == kSgd ? 0.8 : 1.0, r == kSgdNesterov, first};
      dev ? sgd_step_cuda(n, s.p.data(), g, s.a.data(), a, prep, S, k) : sgd_step_cpu(n, s.p.data(), g, s.a.data(), a, prep);
      break;
    }
    case kAdagrad: {
      const AdagradArgs a{dev ? -kLr : -adagrad_clr(kLr, kLrDecay, t), 1e-10, kLrDecay};
      dev ? adagrad_step_cuda(n, s.p.data(), g, s.a.data(), a, prep, S, k) : adagrad_step_cpu(n, s.p.data(), g, s.a.data(), a, prep);
      break;
    }
    case kRmspropCentered:
    case kRmsprop: {
      const RmspropArgs a{-kLr * 0.1, 0.99, 1e-8, r == kRmspropCentered ? 0.9 : 0.0};
      T* ga = r == kRmspropCentered ? s.b.data() : nullptr;
      T* buf = r == kRmspropCentered ? s.c.data() : nullptr;
      dev ? rmsprop_step_cuda(n, s.p.data(), g, s.a.data(), ga, buf, a, prep, S, k)
          : rmsprop_step_cpu(n, s.p.data(), g, s.a.data(), ga, buf, a, prep);
      break;
    }
    case kAdamAmsgrad:
    case kAdamW: {
      double neg_step = -kLr, bc2s = 1.0;
      if (!dev) adam_scalars(kLr, kBeta1, kBeta2, t, &neg_step, &bc2s);
      const AdamArgs a{kBeta1, kBeta2, 1e-8, neg_step, bc2s, r == kAdamW ? 1 - kLr * 1e-2 : 1.0};
      T* vmax = r == kAdamAmsgrad ? s.b.data() : nullptr;
      dev ? adam_step_cuda(n, s.p.data(), g, s.c.data(), s.a.data(), vmax, a, prep, S, k)
          : adam_step_cpu(n, s.p.data(), g, s.c.data(), s.a.data(), vmax, a, prep);
      break;
    }
    default: break;
  }
}

// clip: 0 none; 1 clip by global norm (coefficient < 1) and maximize; 2 clip by norm with a coefficient of 1,
// clip by value and L1.
template <class T> double run_rule(Rule r, int clip) {
  const int64_t n[2] = {300, 77};
  const int steps = 5, bad_step = r % 2 == 0 ? 0 : 2;  // even rules skip their very first step (SGD's first)
  const double clip_norm = clip == 1 ? 5.0 : clip == 2 ? 1e6 : 0.0;
  const double sign = clip == 1 ? -1.0 : 1.0;
  const GradPrep<T> base{T(1), T(clip == 2 ? 0.3 : INFINITY), T(1e-2), T(clip == 2 ? 1e-3 : 0)};
  Side<T> cpu[2] = {init_side<T>(n[0]), init_side<T>(n[1])}, dev[2] = {cpu[0], cpu[1]};
  std::vector<double> ctl(ctl_size(2), 0.0), ws(grad_sumsq_workspace_cuda());
  const bool sgd = r == kSgd || r == kSgdNesterov;
  if (sgd) ctl[kCtlGroup0 + 1] = ctl[kCtlGroup0 + kCtlPerGroup + 1] = 1.0;  // buffers allocated, not yet started
  int64_t host_steps[2] = {0, 0}, host_skipped = 0;
  double worst = 0.0;
  for (int it = 0; it < steps; ++it) {
    std::vector<T> g[2] = {randn<T>(n[0]), randn<T>(n[1])};
    if (it == bad_step) g[1][40] = it % 2 ? T(INFINITY) : T(NAN);
    // device: one accumulated norm pass over both groups, the steps, the counters; no host read in between
    grad_sumsq_cuda(n[0], g[0].data(), ws.data(), ctl.data(), S, false);
    grad_sumsq_cuda(n[1], g[1].data(), ws.data(), ctl.data(), S, true);
    const Side<T> before[2] = {dev[0], dev[1]};
    for (int gi = 0; gi < 2; ++gi) {
      GradPrep<T> c = base;
      c.gscale = T(sign);
      rule_step(r, n[gi], dev[gi], g[gi].data(), c, 0.0, false, OptimCtl{ctl.data(), gi, clip_norm});
    }
    optim_ctl_finish_cuda(ctl.data(), 2, S);
    // host: cnnkit.optim's order (finite check and norm over all groups, then per group its step counter and scalars)
    bool f0, f1;
    const double s0 = grad_sumsq_cpu(n[0], g[0].data(), &f0), s1 = grad_sumsq_cpu(n[1], g[1].data(), &f1);
    if (!(f0 && f1)) {
      ++host_skipped;
      CHECK("ctl skip leaves params and state bit-unchanged", bit_equal(dev[0], before[0]) && bit_equal(dev[1], before[1]));
      CHECK("ctl finite flag", ctl[kCtlFinite] == 0.0);
    } else {
      CHECK("ctl sumsq", std::fabs(ctl[kCtlSumsq] - (s0 + s1)) <= 1e-12 * (s0 + s1));
      const double coef = clip_norm > 0 ? clip_coef(clip_norm, s0 + s1) : 1.0;
      if (clip == 1) CHECK("ctl clip acts", coef < 0.5);
      for (int gi = 0; gi < 2; ++gi) {
        GradPrep<T> c = base;
        c.gscale = T(sign * coef);
        const bool first = sgd && host_steps[gi] == 0;
        rule_step(r, n[gi], cpu[gi], g[gi].data(), c, double(++host_steps[gi]), first, OptimCtl{});
      }
    }
    for (int gi = 0; gi < 2; ++gi)
      worst = std::max({worst, maxrel(dev[gi].p, cpu[gi].p, 1.0), maxrel(dev[gi].a, cpu[gi].a, 1.0),
                        maxrel(dev[gi].b, cpu[gi].b, 1.0), maxrel(dev[gi].c, cpu[gi].c, 1.0)});
  }
  CHECK("ctl counters", ctl[kCtlSkipped] == double(host_skipped) && host_skipped == 1 &&
                            ctl[kCtlGroup0] == double(host_steps[0]) &&
                            ctl[kCtlGroup0 + kCtlPerGroup] == double(host_steps[1]) && host_steps[0] == steps - 1 &&
                            ctl[kCtlGroup0 + 1] == 0.0 && ctl[kCtlGroup0 + kCtlPerGroup + 1] == 0.0);
  return worst;
}

template <class T> void ctl_cases() {
  double worst = 0.0;
  for (int r = 0; r < kRules; ++r)
    for (int clip = 0; clip < 3; ++clip) {
      const double e = run_rule<T>(Rule(r), clip);
      if (e > 1e-6) printf("  optim_ctl rule %d clip %d: %.1e\n", r, clip, e);
      worst = std::max(worst, e);
    }
  printf("optim_ctl %s: %d rules x 3 clip modes x 5 steps (one skipped), 2 groups: worst relative difference %.1e\n",
         sizeof(T) == 4 ? "f32" : "f64", int(kRules), worst);
  CHECK("optim_ctl", worst < 1e-6);

  // clip_grad_norm_ on the device (grad_scale_clamp with the block), and max-norm gated by the finite flag
  std::vector<double> ctl(ctl_size(0)), ws(grad_sumsq_workspace_cuda());
  auto h1 = randn<T>(1001), h2 = h1;
  grad_sumsq_cuda(1001, h2.data(), ws.data(), ctl.data(), S, false);
  grad_scale_clamp_cuda(1001, h2.data(), 1.0, INFINITY, S, OptimCtl{ctl.data(), 0, 3.0});
  bool f;
  const double s = grad_sumsq_cpu(1001, h1.data(), &f);
  // the coefficient from the device's sum (which may differ from the CPU's in the last bits: another order)
  CHECK("ctl clip_grad_norm sum", std::fabs(ctl[kCtlSumsq] - s) <= 1e-12 * s && ctl[kCtlFinite] == 1.0);
  grad_scale_clamp_cpu(1001, h1.data(), clip_coef(3.0, ctl[kCtlSumsq]), INFINITY);
  CHECK("ctl clip_grad_norm", h1 == h2 && clip_coef(3.0, s) < 0.5);
  auto q1 = randn<T>(12 * 40);
  for (auto& e : q1) e *= 3;
  auto q2 = q1, q0 = q1;
  ctl[kCtlFinite] = 0.0;
  maxnorm_rows_cuda(12, 40, q2.data(), 2.0, S, ctl.data());
  CHECK("ctl maxnorm skipped", q2 == q0);
  ctl[kCtlFinite] = 1.0;
  maxnorm_rows_cuda(12, 40, q2.data(), 2.0, S, ctl.data());
  maxnorm_rows_cpu(12, 40, q1.data(), 2.0);
  CHECK("ctl maxnorm", maxrel(q2, q1, 1e-6) < 1e-6 && !(q2 == q0));
  auto h3 = h1;
  h3[7] = T(NAN);
  auto h4 = h3;
  grad_sumsq_cuda(1001, h3.data(), ws.data(), ctl.data(), S, false);
  grad_scale_clamp_cuda(1001, h3.data(), 1.0, INFINITY, S, OptimCtl{ctl.data(), 0, 1e-3});
  CHECK("ctl clip_grad_norm non-finite: nothing scaled",
        ctl[kCtlFinite] == 0.0 && std::memcmp(h3.data(), h4.data(), sizeof(T) * h3.size()) == 0);
}

}  // namespace

EMU_CASE(optim_ctl) { ctl_cases<float>(); ctl_cases<double>(); }
