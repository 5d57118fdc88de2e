// GPU-readiness checks of every *_cuda entry point under the strict shim (cuda_runtime.h; docs/kernels.md,
// "GPU-readiness checks"):
//   shim     the shim itself rejects each illegal launch configuration, a null stream, and reports it
//   empty    zero-size inputs (N = 0, n = 0, rows = 0, a batch of 0) launch nothing illegal and give the CPU's result
//   offsets  every kernel on pointers offset by 1 and 3 elements (views, slices of a flat buffer) equals the CPU
//   huge     realistic and larger-than-2^31 sizes: every launch configuration legal (dry run, kernels not run), and
//            the first and last block of relu, dropout, max-pool and conv run for real on sparse tensors, so
//            their int64 indices past 2^31 (and 2^32) elements are checked against a direct computation
//   errors   a failed launch or cudaMallocAsync becomes a std::runtime_error naming the op; no scratch is leaked
#include <stdexcept>
#include <string>

#include "common/cuda_check.cuh"
#include "common/philox.h"
#include "emu.h"
#include "emu_aug.h"
#include "ops/augment.h"
#include "ops/conv2d.h"
#include "ops/dropout.h"
#include "ops/maxpool2d.h"
#include "ops/optim.h"
#include "ops/relu.h"
using namespace ck;

namespace {

// A copy of v placed k elements into a fresh buffer: data() + k is misaligned for any vector width when k is odd.
template <class T> struct At {
  std::vector<T> buf;
  int k;
  At(const std::vector<T>& v, int k_) : buf(v.size() + k_ + 1, T(0)), k(k_) { std::copy(v.begin(), v.end(), buf.begin() + k); }
  T* p() { return buf.data() + k; }
  std::vector<T> get() const { return std::vector<T>(buf.begin() + k, buf.end() - 1); }
};

template <class T> bool bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(T) * a.size()) == 0;
}

// f() throws E with `want` in its message.
template <class E = std::runtime_error, class F> bool throws_with(F f, const std::string& want) {
  try {
    f();
  } catch (const E& e) {
    const bool ok = std::string(e.what()).find(want) != std::string::npos;
    if (!ok) printf("  message was: %s\n", e.what());
    return ok;
  }
  return false;
}

// A huge zero-filled array whose pages exist only once touched (cuda_runtime.h's emu_reserve).
template <class T> struct Sparse {
  size_t n;
  T* p;
  explicit Sparse(size_t n_) : n(n_), p(static_cast<T*>(emu_reserve(sizeof(T) * n_))) {}
  ~Sparse() { emu_unreserve(p, sizeof(T) * n); }
};


// Every stage kind, in one pipeline (the lighting stage's eigen arrays are set by the caller).
std::vector<AugStage> all_stages(int64_t H, int64_t W) {
  return {aug_stage(kCrop, 0x12, {1}, H - 1, W - 1), aug_stage(kHFlip, 0x11, {0.5}, H - 1, W - 1),
          aug_stage(kJitter, 0x14, {0.3, 0.4, 0.5}, H - 1, W - 1), aug_stage(kLighting, 0x15, {0.1}, H - 1, W - 1),
          aug_stage(kAffine, 0x16, {20.0, 0.1, 0.1, 0.9, 1.1, 0.5}, H - 1, W - 1),
          aug_stage(kResizedCrop, 0x13, {0.5, 1.0, 0.75, 1.33}, 4, 5)};
}

// ---------------------------------------------------------------- shim
void shim_case() {
  struct Bad { dim3 g, b; size_t smem; CUstream_st* s; const char* what; };
  const Bad bad[] = {{dim3(0), dim3(32), 0, S, "grid.x 0"},          {dim3(1, 0), dim3(32), 0, S, "grid.y 0"},
                     {dim3(1, 1, 0), dim3(32), 0, S, "grid.z 0"},    {dim3(1u << 31), dim3(32), 0, S, "grid.x 2^31"},
                     {dim3(1, 65536), dim3(32), 0, S, "grid.y"},     {dim3(1, 1, 65536), dim3(32), 0, S, "grid.z"},
                     {dim3(1), dim3(0), 0, S, "block 0"},            {dim3(1), dim3(1025), 0, S, "block 1025"},
                     {dim3(1), dim3(16, 16), 0, S, "2-D block"},     {dim3(1), dim3(32), 48 * 1024 + 1, S, "smem"}};
  long ran = 0;
  for (const Bad& c : bad) {
    g_expect_violation = true;
    g_expected_violations = 0;
    emu_launch(c.g, c.b, c.smem, c.s, c.what, [&] { ++ran; });
    g_expect_violation = false;
    const cudaError_t e = cudaGetLastError();
    CHECK(c.what, g_expected_violations == 1 && e == cudaErrorInvalidConfiguration && cudaGetLastError() == cudaSuccess);
  }
  g_expect_violation = true;
  g_expected_violations = 0;
  emu_launch(dim3(1), dim3(1), 0, nullptr, "null stream", [&] {});
  std::vector<float> v(4);
  cudaMemsetAsync(v.data(), 0, 16, nullptr);
  g_expect_violation = false;
  CHECK("null stream reported", g_expected_violations == 2);
  g_emu_mode = kEmuDry;  // the largest legal configuration passes (validated, not run)
  const long v0 = g_violations;
  emu_launch(dim3(2147483647u, 65535, 65535), dim3(1024), 48 * 1024, S, "largest legal", [&] {});
  g_emu_mode = kEmuRun;
  CHECK("illegal launches not run, the largest legal one accepted", ran == 0 && g_violations == v0 &&
                                                                      cudaGetLastError() == cudaSuccess);
  printf("shim: %zu illegal configurations and the null stream reported, none run\n", sizeof bad / sizeof bad[0]);
}

// ---------------------------------------------------------------- empty
template <class T> void empty_cases() {
  const long before = g_launches;
  // conv2d, N = 0: no launch; dw zeroed (or kept, accumulating); db = 0 as the CPU gives it
  auto P = make_conv2d_params("t", {0, 3, 5, 5}, {4, 3, 3, 3}, 1, 1, 1, 1, 1, 1, 1);
  std::vector<T> dw(4 * 27, T(3)), dw_acc = dw, db(4, T(3)), db_cpu(4, T(3));
  conv2d_fwd_cuda<T>(P, nullptr, nullptr, nullptr, nullptr, S);
  conv2d_bwd_data_cuda<T>(P, nullptr, nullptr, nullptr, S);
  conv2d_bwd_weight_cuda<T>(P, nullptr, nullptr, dw.data(), false, S);
  conv2d_bwd_weight_cuda<T>(P, nullptr, nullptr, dw_acc.data(), true, S);
  CHECK("empty conv dw", dw == std::vector<T>(dw.size(), T(0)) && dw_acc == std::vector<T>(dw.size(), T(3)));
  auto Pm = make_maxpool2d_params("t", {0, 2, 4, 4}, 2, 2, 2, 2, 0, 0, 1, 1, false);
  maxpool2d_fwd_cuda<T>(Pm, nullptr, nullptr, nullptr, S);
  maxpool2d_bwd_cuda<T>(0, 16, 4, nullptr, nullptr, nullptr, S);
  std::vector<T> dxp(16, T(4));
  maxpool2d_bwd_cuda<T>(1, 16, 0, nullptr, nullptr, dxp.data(), S);  // a plane with no windows: dx = 0
  CHECK("empty maxpool dx", dxp == std::vector<T>(16, T(0)));
  dropout_fwd_cuda<T>(0, nullptr, 0.5, 1, 2, nullptr, nullptr, S);
  dropout_bwd_cuda<T>(0, nullptr, nullptr, 0.5, nullptr, S);
  relu_fwd_cuda<T>(0, nullptr, nullptr, S);
  relu_bwd_cuda<T>(0, nullptr, nullptr, nullptr, S);
  // an optimizer group of size 0 (a flat slice [lo, lo)), with and without a control block
  std::vector<double> ctl(ctl_size(1), 0.0);
  ctl[kCtlFinite] = 1.0;
  GradPrep<T> c{T(1), T(INFINITY), T(0), T(0)};
  for (OptimCtl k : {OptimCtl{}, OptimCtl{ctl.data(), 0, 1.0}}) {
    sgd_step_cuda<T>(0, nullptr, nullptr, nullptr, SgdArgs{-0.1, 0.9, 1.0, false, true}, c, S, k);
    adagrad_step_cuda<T>(0, nullptr, nullptr, nullptr, AdagradArgs{-0.1, 1e-10}, c, S, k);
    rmsprop_step_cuda<T>(0, nullptr, nullptr, nullptr, nullptr, nullptr, RmspropArgs{-0.1, 0.99, 1e-8, 0.9}, c, S, k);
    adam_step_cuda<T>(0, nullptr, nullptr, nullptr, nullptr, nullptr, AdamArgs{0.9, 0.999, 1e-8, -0.1, 1.0, 1.0}, c, S, k);
    grad_scale_clamp_cuda<T>(0, nullptr, 0.5, 1.0, S, k);
  }
  maxnorm_rows_cuda<T>(0, 5, nullptr, 1.0, S);
  maxnorm_rows_cuda<T>(5, 0, nullptr, 1.0, S);
  std::vector<AugStage> st = all_stages(6, 7);
  for (AugStage& s : st) if (s.kind == kLighting) s.eigval = kEigval, s.eigvec = kEigvec;
  augment_pipeline_cuda<T>(0, 3, 6, 7, nullptr, st.data(), int(st.size()), AugKey{1, 2, nullptr, 0}, nullptr, nullptr, S);
  CHECK("empty inputs launch nothing", g_launches == before);
  // what must still run: the bias gradient of an empty batch (db = 0, or db kept), the norm of no gradient
  // (0, finite; accumulate keeps the pair), and the control block's step (one thread)
  conv2d_bwd_bias_cuda<T>(0, 4, 25, nullptr, db.data(), false, S);
  conv2d_bwd_bias_cpu<T>(0, 4, 25, nullptr, db_cpu.data(), false);
  CHECK("empty bias grad", bits(db, db_cpu));
  std::vector<double> ws(grad_sumsq_workspace_cuda()), out = {-1.0, -1.0}, acc = {2.5, 0.0};
  grad_sumsq_cuda<T>(0, nullptr, ws.data(), out.data(), S);
  grad_sumsq_cuda<T>(0, nullptr, ws.data(), acc.data(), S, true);
  CHECK("empty sumsq", out[0] == 0.0 && out[1] == 1.0 && acc[0] == 2.5 && acc[1] == 0.0);
  std::vector<double> ctl0(ctl_size(0), 0.0);
  ctl0[kCtlFinite] = 1.0;
  optim_ctl_finish_cuda(ctl0.data(), 0, S);
  CHECK("empty ctl finish", ctl0[kCtlSkipped] == 0.0);
  printf("empty %s: every entry point on zero sizes, %ld launches (bias, sumsq, ctl only)\n",
         sizeof(T) == 4 ? "f32" : "f64", g_launches - before);
}

// ---------------------------------------------------------------- offsets
// The conv passes on aligned pointers (reference: bit for bit) and on pointers offset by 1 and 3 elements;
// the aligned run is also checked against the CPU (tolerance as compare_core.cc).
template <class T> bool conv_offsets(std::vector<int64_t> xs, std::vector<int64_t> wsh, int64_t s, int64_t pd, bool tf32) {
  auto P = make_conv2d_params("t", xs, wsh, s, s, pd, pd, 1, 1, 1);
  auto x = randn<T>(P.N * P.C * P.H * P.W), w = randn<T>(P.K * P.Cg() * P.R * P.S), b = randn<T>(P.K);
  auto dy = randn<T>(P.N * P.K * P.P * P.Q), dw0 = randn<T>(w.size()), db0 = randn<T>(P.K);
  std::vector<T> y(dy.size()), dx(x.size()), dw = dw0, db = db0, y1(dy.size()), dx1(x.size()), dw1 = dw0, db1 = db0;
  conv2d_fwd_cuda(P, x.data(), w.data(), b.data(), y.data(), S, tf32);
  conv2d_bwd_data_cuda(P, dy.data(), w.data(), dx.data(), S, tf32);
  conv2d_bwd_weight_cuda(P, dy.data(), x.data(), dw.data(), true, S, tf32);
  conv2d_bwd_bias_cuda(P.N, P.K, P.P * P.Q, dy.data(), db.data(), true, S);
  conv2d_fwd_cpu(P, x.data(), w.data(), b.data(), y1.data());
  conv2d_bwd_data_cpu(P, dy.data(), w.data(), dx1.data());
  conv2d_bwd_weight_cpu(P, dy.data(), x.data(), dw1.data(), true);
  conv2d_bwd_bias_cpu(P.N, P.K, P.P * P.Q, dy.data(), db1.data(), true);
  const double tol = tf32 ? 1e-2 : sizeof(T) == 4 ? 1e-4 : 1e-10;
  bool ok = maxrel(y, y1, 1.0) < tol && maxrel(dx, dx1, 1.0) < tol && maxrel(dw, dw1, 1.0) < tol && maxrel(db, db1, 1.0) < tol;
  for (int k : {1, 3}) {
    At<T> xo(x, k), wo(w, k), bo(b, k), dyo(dy, k), yo(y1, k), dxo(dx1, k), dwo(dw0, k), dbo(db0, k);
    conv2d_fwd_cuda(P, xo.p(), wo.p(), bo.p(), yo.p(), S, tf32);
    conv2d_bwd_data_cuda(P, dyo.p(), wo.p(), dxo.p(), S, tf32);
    conv2d_bwd_weight_cuda(P, dyo.p(), xo.p(), dwo.p(), true, S, tf32);
    conv2d_bwd_bias_cuda(P.N, P.K, P.P * P.Q, dyo.p(), dbo.p(), true, S);
    ok = ok && bits(yo.get(), y) && bits(dxo.get(), dx) && bits(dwo.get(), dw) && bits(dbo.get(), db);
  }
  return ok;
}

template <class T> bool small_offsets(int k) {
  bool ok = true;
  // max-pool
  auto Pm = make_maxpool2d_params("t", {2, 3, 7, 6}, 3, 3, 2, 2, 1, 1, 1, 1, true);
  const int64_t no = Pm.N * Pm.C * Pm.P * Pm.Q;
  auto x = randn<T>(Pm.N * Pm.C * Pm.H * Pm.W), dy = randn<T>(no);
  std::vector<T> y1(no), dx1(x.size());
  std::vector<int64_t> i1(no);
  maxpool2d_fwd_cpu(Pm, x.data(), y1.data(), i1.data());
  maxpool2d_bwd_cpu(Pm.N * Pm.C, Pm.H * Pm.W, Pm.P * Pm.Q, dy.data(), i1.data(), dx1.data());
  At<T> xo(x, k), yo(y1, k), dyo(dy, k), dxo(dx1, k);
  At<int64_t> io(i1, k);
  maxpool2d_fwd_cuda(Pm, xo.p(), yo.p(), io.p(), S);
  maxpool2d_bwd_cuda(Pm.N * Pm.C, Pm.H * Pm.W, Pm.P * Pm.Q, dyo.p(), io.p(), dxo.p(), S);
  ok = ok && bits(yo.get(), y1) && io.get() == i1 &&
       scatter_sum_err_over_bound(Pm.N * Pm.C, Pm.H * Pm.W, Pm.P * Pm.Q, dy, i1, dxo.get(), dx1) <= 1;
  // dropout (the uint8 mask at any byte offset), relu
  const int64_t n = 1029;
  auto v = randn<T>(n), g = randn<T>(n);
  std::vector<T> dy1(n), dd1(n), r1(n), rb1(n);
  std::vector<uint8_t> m1(n);
  dropout_fwd_cpu(n, v.data(), 0.3, 99, 5, dy1.data(), m1.data());
  dropout_bwd_cpu(n, g.data(), m1.data(), 0.3, dd1.data());
  relu_fwd_cpu(n, v.data(), r1.data());
  relu_bwd_cpu(n, g.data(), v.data(), rb1.data());
  At<T> vo(v, k), go(g, k), dyo2(dy1, k), ddo(dd1, k), ro(r1, k), rbo(rb1, k);
  At<uint8_t> mo(m1, k);
  dropout_fwd_cuda(n, vo.p(), 0.3, 99, 5, dyo2.p(), mo.p(), S);
  dropout_bwd_cuda(n, go.p(), mo.p(), 0.3, ddo.p(), S);
  relu_fwd_cuda(n, vo.p(), ro.p(), S);
  relu_bwd_cuda(n, go.p(), vo.p(), rbo.p(), S);
  ok = ok && bits(dyo2.get(), dy1) && mo.get() == m1 && bits(ddo.get(), dd1) && bits(ro.get(), r1) && bits(rbo.get(), rb1);
  return ok;
}

// Every optimizer rule on a slice [k, k + n) of flat buffers (as a param group's flat.data[lo:hi]), host
// scalars and a control block (at an odd double offset too), against the CPU on aligned copies.
template <class T> bool optim_offsets(int k) {
  const int64_t n = 517;
  const GradPrep<T> c{T(0.5), T(0.3), T(1e-2), T(1e-3)};
  double worst = 0;
  bool ok = true;
  for (int rule = 0; rule < 4; ++rule) {
    auto p = randn<T>(n), g = randn<T>(n), a = randn<T>(n), b = randn<T>(n), d = randn<T>(n);
    for (auto& e : a) e = std::fabs(e) + 1;
    for (auto& e : b) e = T(0.1) * std::fabs(e);
    for (auto& e : d) e = std::fabs(e);
    auto p1 = p, a1 = a, b1 = b, d1 = d;
    At<T> po(p, k), go(g, k), ao(a, k), bo(b, k), dd(d, k);
    switch (rule) {
      case 0: { SgdArgs s{-0.1, 0.9, 0.9, true, false}; sgd_step_cpu(n, p1.data(), g.data(), a1.data(), s, c); sgd_step_cuda(n, po.p(), go.p(), ao.p(), s, c, S); break; }
      case 1: { AdagradArgs s{-0.01, 1e-10}; adagrad_step_cpu(n, p1.data(), g.data(), a1.data(), s, c); adagrad_step_cuda(n, po.p(), go.p(), ao.p(), s, c, S); break; }
      case 2: { RmspropArgs s{-0.01, 0.99, 1e-8, 0.9}; rmsprop_step_cpu(n, p1.data(), g.data(), a1.data(), b1.data(), d1.data(), s, c); rmsprop_step_cuda(n, po.p(), go.p(), ao.p(), bo.p(), dd.p(), s, c, S); break; }
      default: { AdamArgs s{0.9, 0.999, 1e-8, -1e-3, 0.5, 1 - 1e-4}; adam_step_cpu(n, p1.data(), g.data(), a1.data(), d1.data(), b1.data(), s, c); adam_step_cuda(n, po.p(), go.p(), ao.p(), dd.p(), bo.p(), s, c, S); break; }
    }
    worst = std::max({worst, maxrel(po.get(), p1, 1.0), maxrel(ao.get(), a1, 1.0), maxrel(bo.get(), b1, 1.0), maxrel(dd.get(), d1, 1.0)});
  }
  // a control block at an odd offset: a skipped step (finite = 0) writes nothing
  std::vector<double> ctl(ctl_size(1) + k, 0.0);
  double* blk = ctl.data() + k;
  auto p = randn<T>(n), g = randn<T>(n), m = randn<T>(n);
  At<T> po(p, k), go(g, k), mo(m, k);
  sgd_step_cuda(n, po.p(), go.p(), mo.p(), SgdArgs{-0.1, 0.9, 1.0, false, false}, c, S, OptimCtl{blk, 0, 0.0});
  ok = ok && bits(po.get(), p) && bits(mo.get(), m);
  // gradient norm, clamp, max-norm rows
  std::vector<double> ws(grad_sumsq_workspace_cuda() + k), out(2 + k);
  bool f1;
  const double s1 = grad_sumsq_cpu(n, g.data(), &f1);
  grad_sumsq_cuda(n, go.p(), ws.data() + k, out.data() + k, S);
  ok = ok && std::fabs(out[k] - s1) <= 1e-12 * (1 + s1) && out[k + 1] == 1.0;
  auto h1 = g;
  grad_scale_clamp_cpu(n, h1.data(), 0.7, 0.5);
  grad_scale_clamp_cuda(n, go.p(), 0.7, 0.5, S);
  ok = ok && bits(go.get(), h1);
  auto q = randn<T>(11 * 47);
  for (auto& e : q) e *= 3;
  auto q1 = q;
  At<T> qo(q, k);
  maxnorm_rows_cpu(11, 47, q1.data(), 2.0);
  maxnorm_rows_cuda(11, 47, qo.p(), 2.0, S);
  ok = ok && maxrel(qo.get(), q1, 1e-6) < 1e-6;
  if (worst > 1e-6) printf("  optim at offset %d: %.1e\n", k, worst);
  return ok && worst <= 1e-6;
}

template <class T> bool aug_offsets(int k) {
  const int64_t N = 3, C = 3, H = 6, W = 7;
  std::vector<AugStage> st = all_stages(H, W);
  std::vector<double> ev(kEigval, kEigval + 3), evec(kEigvec, kEigvec + 9);
  At<double> evo(ev, k), eveco(evec, k);
  for (AugStage& s : st) if (s.kind == kLighting) s.eigval = kEigval, s.eigvec = kEigvec;
  const std::vector<int64_t> ids = {4, 9, 123456789012LL};
  auto x = randn<T>(N * C * H * W);
  const int64_t P = st.back().P, Q = st.back().Q;
  std::vector<T> y1(N * C * P * Q);
  std::vector<double> r1(N * kAugRecord);
  augment_pipeline_cpu<T>(N, C, H, W, x.data(), st.data(), int(st.size()), AugKey{77, 3, ids.data(), 1}, y1.data(), r1.data());
  for (AugStage& s : st) if (s.kind == kLighting) s.eigval = evo.p(), s.eigvec = eveco.p();
  At<T> xo(x, k), yo(y1, k);
  At<int64_t> io(ids, k);
  At<double> ro(r1, k);
  augment_pipeline_cuda<T>(N, C, H, W, xo.p(), st.data(), int(st.size()), AugKey{77, 3, io.p(), 0}, yo.p(), ro.p(), S);
  return bits(yo.get(), y1) && bits(ro.get(), r1);
}

template <class T> void offset_cases() {
  bool ok = conv_offsets<T>({2, 3, 7, 6}, {5, 3, 3, 2}, 1, 1, false) &&
            conv_offsets<T>({4, 2, 16, 16}, {2, 2, 3, 3}, 1, 1, false);  // 1024-long reduction: split-K weight pass
  if constexpr (sizeof(T) == 4) ok = ok && conv_offsets<T>({2, 3, 7, 6}, {5, 3, 3, 2}, 1, 1, true);
  printf("offsets %s +1 and +3 elements: conv%s %s\n", sizeof(T) == 4 ? "f32" : "f64", sizeof(T) == 4 ? " (and TF32)" : "",
         ok ? "ok" : "DIFFERENT");
  CHECK("offsets conv", ok);
  for (int k : {1, 3}) {
    const bool ok2 = small_offsets<T>(k), ok3 = optim_offsets<T>(k), ok4 = aug_offsets<T>(k);
    printf("offsets %s +%d elements: pool/dropout/relu %s, optim %s, augment %s\n", sizeof(T) == 4 ? "f32" : "f64", k,
           ok2 ? "ok" : "DIFFERENT", ok3 ? "ok" : "DIFFERENT", ok4 ? "ok" : "DIFFERENT");
    CHECK("offsets", ok2 && ok3 && ok4);
  }
}

// ---------------------------------------------------------------- huge: dry run of every entry point
template <class T> T* fake(uintptr_t a) { return reinterpret_cast<T*>(a * 4096); }

template <class T> void huge_dry() {
  g_emu_mode = kEmuDry;
  const long before = g_launches;
  T* A = fake<T>(1);
  T* B = fake<T>(2);
  T* Cp = fake<T>(3);
  T* D = fake<T>(4);
  T* E = fake<T>(5);
  const int64_t big = (int64_t(1) << 33) + 5;
  struct Conv { std::vector<int64_t> x, w; int64_t pad, groups; };
  const Conv convs[] = {{{256, 64, 224, 224}, {64, 64, 3, 3}, 1, 1},   // 822M-element activation
                        {{1024, 64, 224, 224}, {64, 64, 3, 3}, 1, 1},  // 3.3G elements: past 2^31
                        {{64, 4096, 56, 56}, {4096, 1, 3, 3}, 1, 4096},  // depthwise, groups * splits <= 65535
                        {{4, 3, 1024, 1024}, {96, 3, 11, 11}, 2, 1},
                        {{2, 2048, 7, 7}, {4096, 2048, 1, 1}, 0, 1}};
  for (const Conv& c : convs) {
    auto P = make_conv2d_params("t", c.x, c.w, 1, 1, c.pad, c.pad, 1, 1, c.groups);
    for (bool tf32 : {false, true}) {
      conv2d_fwd_cuda<T>(P, A, B, Cp, D, S, tf32);
      conv2d_bwd_data_cuda<T>(P, D, B, A, S, tf32);
      conv2d_bwd_weight_cuda<T>(P, D, A, B, false, S, tf32);
      conv2d_bwd_weight_cuda<T>(P, D, A, B, true, S, tf32);
    }
    conv2d_bwd_bias_cuda<T>(P.N, P.K, P.P * P.Q, D, Cp, false, S);
  }
  // more than 65535 row tiles cannot be one launch: a clear error, not an illegal grid
  auto Pk = make_conv2d_params("t", {1, 1, 1, 1}, {65535 * 64 + 1, 1, 1, 1}, 1, 1, 0, 0, 1, 1, 1);
  CHECK("conv too many row tiles", throws_with<std::invalid_argument>([&] { conv2d_fwd_cuda<T>(Pk, A, B, nullptr, D, S); }, "too large for one CUDA launch"));
  auto Pm = make_maxpool2d_params("t", {2048, 64, 224, 224}, 2, 2, 2, 2, 0, 0, 1, 1, false);
  maxpool2d_fwd_cuda<T>(Pm, A, B, fake<int64_t>(9), S);
  maxpool2d_bwd_cuda<T>(Pm.N * Pm.C, Pm.H * Pm.W, Pm.P * Pm.Q, B, fake<int64_t>(9), A, S);
  dropout_fwd_cuda<T>(big, A, 0.5, 1, 2, B, fake<uint8_t>(9), S);
  dropout_bwd_cuda<T>(big, A, fake<uint8_t>(9), 0.5, B, S);
  relu_fwd_cuda<T>(big, A, B, S);
  relu_bwd_cuda<T>(big, A, B, Cp, S);
  const GradPrep<T> c{T(1), T(INFINITY), T(0), T(0)};
  const OptimCtl k{fake<double>(8), 3, 1.0};
  for (OptimCtl kk : {OptimCtl{}, k}) {
    sgd_step_cuda<T>(big, A, B, Cp, SgdArgs{-0.1, 0.9, 1.0, false, true}, c, S, kk);
    adagrad_step_cuda<T>(big, A, B, Cp, AdagradArgs{-0.1, 1e-10}, c, S, kk);
    rmsprop_step_cuda<T>(big, A, B, Cp, D, E, RmspropArgs{-0.1, 0.99, 1e-8, 0.9}, c, S, kk);
    adam_step_cuda<T>(big, A, B, Cp, D, E, AdamArgs{0.9, 0.999, 1e-8, -0.1, 1.0, 1.0}, c, S, kk);
    grad_scale_clamp_cuda<T>(big, A, 0.5, 1.0, S, kk);
  }
  grad_sumsq_cuda<T>(big, A, fake<double>(8), fake<double>(9), S);
  maxnorm_rows_cuda<T>((int64_t(1) << 31) + 7, 4, A, 1.0, S);
  maxnorm_rows_cuda<T>(3, int64_t(1) << 32, A, 1.0, S);
  optim_ctl_finish_cuda(fake<double>(8), 1000, S);
  std::vector<AugStage> st = all_stages(224, 224);
  for (AugStage& s : st) if (s.kind == kLighting) s.eigval = fake<double>(10), s.eigvec = fake<double>(11);
  st.back().P = st.back().Q = 224;
  augment_pipeline_cuda<T>(65536, 3, 224, 224, A, st.data(), int(st.size()), AugKey{1, 2, fake<int64_t>(12), 0}, B,
                           fake<double>(13), S);
  g_emu_mode = kEmuRun;
  printf("huge %s (dry): %ld launch configurations checked, up to %lld elements\n", sizeof(T) == 4 ? "f32" : "f64",
         g_launches - before, (long long)big);
}

// ---------------------------------------------------------------- huge: first and last block run for real
// The grid-stride indices that blocks 0 and gridDim.x - 1 of a capped 1-D grid visit below n.
std::vector<int64_t> end_indices(int64_t n) {
  const int64_t blocks = cudak::blocks_for(n), stride = blocks * cudak::kThreads;
  std::vector<int64_t> v;
  for (int64_t b : {int64_t(0), blocks - 1})
    for (int64_t t = 0; t < cudak::kThreads; ++t)
      for (int64_t i = b * cudak::kThreads + t; i < n; i += stride) v.push_back(i);
  return v;
}

double hashv(int64_t i) { return double(int64_t((uint64_t(i) * 0x9E3779B97F4A7C15ull) >> 40) % 2001 - 1000) / 128.0; }

void huge_ends() {
  g_emu_mode = kEmuEnds;
  bool ok = true;
  {  // relu past 2^32 elements
    const int64_t n = (int64_t(1) << 33) + 1000;
    Sparse<float> x(n), y(n);
    const auto idx = end_indices(n);
    for (int64_t i : idx) x.p[i] = float(hashv(i));
    relu_fwd_cuda<float>(n, x.p, y.p, S);
    for (int64_t i : idx) ok = ok && y.p[i] == std::max(x.p[i], 0.0f);
    printf("huge relu n = 2^33 + 1000: %zu indices up to %lld %s\n", idx.size(), (long long)idx.back(), ok ? "ok" : "WRONG");
  }
  {  // dropout: Philox block counters past 2^31 (element indices past 2^33)
    const int64_t n = (int64_t(1) << 34) + 5, nb = (n + 3) / 4;
    Sparse<float> x(n), y(n);
    Sparse<uint8_t> m(n);
    const auto bidx = end_indices(nb);
    for (int64_t b : bidx) for (int64_t i = 4 * b; i < std::min(n, 4 * b + 4); ++i) x.p[i] = float(hashv(i));
    const uint64_t seed = 0x1234567890abcdefull, off = (uint64_t(1) << 40) + 3;
    dropout_fwd_cuda<float>(n, x.p, 0.25, seed, off, y.p, m.p, S);
    const uint64_t thr = dropout_threshold("t", 0.25);
    const float scale = dropout_scale<float>(0.25);
    bool okd = true;
    for (int64_t b : bidx) {
      const Philox4 r = philox_block(seed, off, uint64_t(b));
      for (int j = 0; j < 4 && 4 * b + j < n; ++j) {
        const int64_t i = 4 * b + j;
        const uint8_t keep = uint64_t(r.v[j]) >= thr;
        const float want = x.p[i] * float(keep) * scale;
        okd = okd && m.p[i] == keep && std::memcmp(&y.p[i], &want, 4) == 0;
      }
    }
    printf("huge dropout n = 2^34 + 5: Philox blocks up to %lld %s\n", (long long)bidx.back(), okd ? "ok" : "WRONG");
    ok = ok && okd;
  }
  {  // max-pool of a (2048, 64, 224, 224) input: 6.6G elements
    auto P = make_maxpool2d_params("t", {2048, 64, 224, 224}, 2, 2, 2, 2, 0, 0, 1, 1, false);
    const int64_t PQ = P.P * P.Q, HW = P.H * P.W, total = P.N * P.C * PQ;
    Sparse<float> x(P.N * P.C * HW), y(total);
    Sparse<int64_t> ind(total);
    const auto idx = end_indices(total);
    for (int64_t o : idx) {
      const int64_t pl = o / PQ, op = (o % PQ) / P.Q, oq = o % P.Q;
      for (int64_t r = 0; r < 2; ++r) for (int64_t s = 0; s < 2; ++s) {
        const int64_t i = pl * HW + (2 * op + r) * P.W + 2 * oq + s;
        x.p[i] = float(hashv(i));
      }
    }
    maxpool2d_fwd_cuda<float>(P, x.p, y.p, ind.p, S);
    bool okp = true;
    for (int64_t o : idx) {
      const int64_t pl = o / PQ, op = (o % PQ) / P.Q, oq = o % P.Q;
      float m = -INFINITY;
      int64_t mi = 0;
      for (int64_t r = 0; r < 2; ++r) for (int64_t s = 0; s < 2; ++s) {
        const int64_t j = (2 * op + r) * P.W + 2 * oq + s;
        if (x.p[pl * HW + j] > m) m = x.p[pl * HW + j], mi = j;
      }
      okp = okp && y.p[o] == m && ind.p[o] == mi;
    }
    printf("huge maxpool x (2048, 64, 224, 224): outputs up to %lld %s\n", (long long)idx.back(), okp ? "ok" : "WRONG");
    ok = ok && okp;
  }
  {  // conv forward, x (1024, 64, 224, 224) = 3.3G elements: the last column tile reads image 1023
    auto P = make_conv2d_params("t", {1024, 64, 224, 224}, {8, 64, 3, 3}, 1, 1, 1, 1, 1, 1, 1);
    const int64_t HW = P.H * P.W;
    Sparse<float> x(P.N * P.C * HW), y(P.N * P.K * P.P * P.Q);
    auto w = randn<float>(P.K * P.C * 9), b = randn<float>(P.K);
    for (int64_t c = 0; c < P.C; ++c)
      for (int64_t h = 220; h < 224; ++h)
        for (int64_t q = 0; q < P.W; ++q) {
          const int64_t i = ((1023 * P.C + c) * P.H + h) * P.W + q;
          x.p[i] = float(hashv(i));
        }
    conv2d_fwd_cuda<float>(P, x.p, w.data(), b.data(), y.p, S);
    double worst = 0;
    for (int64_t k = 0; k < P.K; ++k)
      for (int64_t q = 160; q < 224; ++q) {
        double s = b[k], mag = std::fabs(b[k]);
        for (int64_t c = 0; c < P.C; ++c)
          for (int64_t r = 0; r < 3; ++r)
            for (int64_t t = 0; t < 3; ++t) {
              const int64_t ih = 223 - 1 + r, iw = q - 1 + t;
              if (ih >= P.H || iw < 0 || iw >= P.W) continue;
              const double v = double(w[(k * P.C + c) * 9 + r * 3 + t]) * x.p[((1023 * P.C + c) * P.H + ih) * P.W + iw];
              s += v;
              mag += std::fabs(v);
            }
        const float got = y.p[((1023 * P.K + k) * P.P + 223) * P.Q + q];
        worst = std::max(worst, std::fabs(got - s) / (1e-6 + mag));
      }
    printf("huge conv x (1024, 64, 224, 224): last tile vs a direct sum, worst |err| / sum|terms| %.1e\n", worst);
    ok = ok && worst < 1e-5;
  }
  g_emu_mode = kEmuRun;
  CHECK("huge ends", ok);
}

// ---------------------------------------------------------------- errors
void error_cases() {
  std::vector<float> v(300, 1.0f), o(300);
  emu_fail_next_launch = true;
  CHECK("launch error -> exception", throws_with([&] { relu_fwd_cuda<float>(300, v.data(), o.data(), S); },
                                                 "relu_fwd: CUDA launch failed: cudaErrorLaunchOutOfResources"));
  auto P = make_conv2d_params("t", {8, 4, 16, 16}, {8, 4, 3, 3}, 1, 1, 1, 1, 1, 1, 1);  // split-K: uses scratch
  auto x = randn<float>(8 * 4 * 256), dy = randn<float>(8 * 8 * 256), dw = randn<float>(8 * 36);
  emu_fail_next_malloc = true;
  CHECK("malloc error -> exception", throws_with([&] { conv2d_bwd_weight_cuda<float>(P, dy.data(), x.data(), dw.data(), false, S); },
                                                 "conv2d_bwd_weight: cudaMallocAsync(scratch) failed: cudaErrorMemoryAllocation"));
  emu_fail_next_launch = true;
  CHECK("split-K launch error -> exception", throws_with([&] { conv2d_bwd_weight_cuda<float>(P, dy.data(), x.data(), dw.data(), false, S); },
                                                         "conv2d_bwd_weight: CUDA launch failed"));
  CHECK("split-K scratch freed after the error", emu_blocks().empty());
  std::vector<AugStage> st = all_stages(6, 7);
  for (AugStage& s : st) if (s.kind == kLighting) s.eigval = kEigval, s.eigvec = kEigvec;
  const std::vector<int64_t> ids = {1, 2};
  auto xa = randn<float>(2 * 3 * 42);
  std::vector<float> ya(2 * 3 * 20);
  emu_fail_next_launch = true;
  CHECK("augment launch error -> exception", throws_with([&] {
          augment_pipeline_cuda<float>(2, 3, 6, 7, xa.data(), st.data(), int(st.size()), AugKey{1, 2, ids.data(), 0}, ya.data(), nullptr, S);
        }, "augment: CUDA launch failed"));
  CHECK("augment scratch freed after the error", emu_blocks().empty());
  printf("errors: launch and allocation failures raise, naming the op; scratch freed\n");
}

}  // namespace

EMU_CASE(audit_shim) { shim_case(); }
EMU_CASE(audit_empty) { empty_cases<float>(); empty_cases<double>(); }
EMU_CASE(audit_offsets) { offset_cases<float>(); offset_cases<double>(); }
EMU_CASE(audit_huge) { huge_dry<float>(); huge_dry<double>(); huge_ends(); }
EMU_CASE(audit_errors) { error_cases(); }
