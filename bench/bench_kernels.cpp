// C++ microbenchmarks of cnnkit's CPU kernels, called directly (no Python, no allocation in the timed
// region): conv2d fwd / bwd_data / bwd_weight on the eight cases.json shapes, maxpool 2x2/2 fwd/bwd,
// dropout p=0.5 fwd/bwd and relu fwd, float32. A plain std::chrono harness: median of N repeats after
// warm-up, printed as ms and GFLOP/s or GB/s by bench/cases.json's counting rules.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/runtime.h"
#include "gemm/gemm.h"
#include "ops/conv2d.h"
#include "ops/dropout.h"
#include "ops/maxpool2d.h"
#include "ops/relu.h"

namespace {

struct ConvCase {
  int64_t N, C, H, W, K, kernel, stride, padding;
  const char* label;
};

// These mirror the "conv2d" list of bench/cases.json (keep them in sync by hand).
const ConvCase kConvCases[] = {
    {128, 3, 32, 32, 32, 3, 1, 1, "cifar conv1"},     {128, 32, 32, 32, 32, 3, 1, 1, "cifar 32x32"},
    {128, 32, 16, 16, 64, 3, 1, 1, "cifar 16x16"},    {128, 64, 8, 8, 128, 3, 1, 1, "cifar 8x8"},
    {32, 3, 224, 224, 64, 11, 4, 2, "AlexNet conv1"}, {16, 64, 56, 56, 64, 3, 1, 1, "VGG/ResNet block"},
    {64, 256, 14, 14, 64, 1, 1, 0, "1x1 bottleneck"}, {128, 1, 28, 28, 20, 5, 1, 0, "LeNet conv1"},
};
// cases.json "maxpool2d" (2x2, stride 2) and "dropout" (p = 0.5) shapes; relu uses the first maxpool shape.
const std::vector<int64_t> kPoolShapes[] = {{128, 64, 32, 32}, {128, 32, 32, 32}};
const std::vector<int64_t> kDropoutShapes[] = {{128, 4096}, {128, 64, 32, 32}};
const std::vector<int64_t> kReluShape = {128, 64, 32, 32};

struct Options {
  int threads = 0;  // 0: leave the OpenMP default
  int repeat = 10;
  int warmup = 2;
  std::string only;  // "", gemm, conv2d, maxpool2d, dropout, relu
  double peak = 0;   // measured fp32 FMA peak of the machine, GFLOP/s (0: not reported)
  int peak_threads = 2;
};

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
  return out;
}

std::vector<float> randn(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = dist(gen);
  return v;
}

// Median wall time in ms of `fn` over opt.repeat calls, after opt.warmup untimed calls.
double time_ms(const Options& opt, const std::function<void()>& fn) {
  for (int i = 0; i < opt.warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < opt.repeat; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    auto t1 = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(t.begin(), t.end());
  size_t n = t.size();
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

void report(const char* op, const std::string& label, const char* pass, double ms, double work, const char* unit) {
  std::printf("%-9s %-24s %-10s %10.3f %10.1f %s\n", op, label.c_str(), pass, ms, work / ms * 1e-6, unit);
  std::fflush(stdout);
}

// The GEMM micro-kernels, one thread, each variant the CPU runs: square-ish shapes and the conv2d GEMM
// shapes of cases.json (m = out-channels, n = pixels of a work item, k = C*R*S). The rate is against one
// core's peak: pass --peak GFLOP/s of the whole machine and the thread count used to measure it.
void bench_gemm(const Options& opt) {
  struct Shape {
    int64_t m, n, k;
    const char* label;
  };
  const Shape shapes[] = {{512, 512, 512, "square 512"},      {32, 4096, 27, "cifar conv1 fwd"},
                          {32, 4096, 288, "cifar 32x32 fwd"}, {64, 2048, 288, "cifar 16x16 fwd"},
                          {128, 2048, 576, "cifar 8x8 fwd"},  {64, 3136, 576, "VGG block fwd"},
                          {64, 196 * 8, 256, "1x1 fwd"},      {128, 256, 2048, "linear 2048->256"}};
  const std::string before = ck::gemm_isa();
  for (const std::string isa : {"avx512", "avx2", "generic"}) {
    if (ck::gemm_isa_supported().find(isa) == std::string::npos) continue;
    ck::set_gemm_isa(isa);
    for (const Shape& sh : shapes) {
      auto a = randn(sh.m * sh.k, 1), b = randn(sh.k * sh.n, 2);
      std::vector<float> c(size_t(sh.m * sh.n));
      const double ms = time_ms(opt, [&] {
        ck::sgemm(false, false, sh.m, sh.n, sh.k, 1.f, a.data(), sh.k, b.data(), sh.n, 0.f, c.data(), sh.n);
      });
      const double gflops = 2.0 * sh.m * sh.n * sh.k / ms * 1e-6;
      std::printf("%-9s %-24s %-10s %10.3f %10.1f GFLOP/s", "gemm", sh.label, isa.c_str(), ms, gflops);
      if (opt.peak > 0) std::printf("  %5.1f%% of one core's peak", 100.0 * gflops / (opt.peak / opt.peak_threads));
      std::printf("\n");
    }
  }
  ck::set_gemm_isa(before);
}

void bench_conv(const Options& opt) {
  for (const auto& c : kConvCases) {
    auto p = ck::make_conv2d_params("bench", {c.N, c.C, c.H, c.W}, {c.K, c.C, c.kernel, c.kernel}, c.stride, c.stride,
                                    c.padding, c.padding, 1, 1, 1);
    auto x = randn(p.N * p.C * p.H * p.W, 1);
    auto w = randn(p.K * p.C * p.R * p.S, 2);
    auto dy = randn(p.N * p.K * p.P * p.Q, 3);
    std::vector<float> y(dy.size()), dx(x.size()), dw(w.size());
    double flops = 2.0 * p.N * p.K * p.P * p.Q * p.Cg() * p.R * p.S;
    report("conv2d", c.label, "fwd",
           time_ms(opt, [&] { ck::conv2d_fwd_cpu<float>(p, x.data(), w.data(), nullptr, y.data()); }), flops,
           "GFLOP/s");
    report("conv2d", c.label, "bwd_data",
           time_ms(opt, [&] { ck::conv2d_bwd_data_cpu<float>(p, dy.data(), w.data(), dx.data()); }), flops, "GFLOP/s");
    report("conv2d", c.label, "bwd_weight",
           time_ms(opt, [&] { ck::conv2d_bwd_weight_cpu<float>(p, dy.data(), x.data(), dw.data(), false); }), flops,
           "GFLOP/s");
  }
}

void bench_maxpool(const Options& opt) {
  for (const auto& s : kPoolShapes) {
    auto p = ck::make_maxpool2d_params("bench", s, 2, 2, 2, 2, 0, 0, 1, 1, false);
    auto x = randn(numel(s), 4);
    int64_t ny = p.N * p.C * p.P * p.Q;
    auto dy = randn(ny, 5);
    std::vector<float> y(ny), dx(x.size());
    std::vector<int64_t> idx(ny);
    // x + y (fp32) + indices (int64); the backward moves dy + indices + dx, the same count.
    double bytes = 4.0 * x.size() + 4.0 * ny + 8.0 * ny;
    std::string label = shape_str(s) + " k2s2";
    report("maxpool2d", label, "fwd",
           time_ms(opt, [&] { ck::maxpool2d_fwd_cpu<float>(p, x.data(), y.data(), idx.data()); }), bytes, "GB/s");
    report("maxpool2d", label, "bwd",
           time_ms(opt,
                   [&] {
                     ck::maxpool2d_bwd_cpu<float>(p.N * p.C, p.H * p.W, p.P * p.Q, dy.data(), idx.data(), dx.data());
                   }),
           bytes, "GB/s");
  }
}

void bench_dropout(const Options& opt) {
  for (const auto& s : kDropoutShapes) {
    int64_t n = numel(s);
    auto x = randn(n, 6);
    auto dy = randn(n, 7);
    std::vector<float> y(n), dx(n);
    std::vector<uint8_t> mask(n);
    double bytes = 9.0 * n;  // fp32 in, fp32 out, 1-byte mask, in each direction
    std::string label = shape_str(s) + " p=0.5";
    uint64_t offset = 0;
    report("dropout", label, "fwd",
           time_ms(opt,
                   [&] {
                     ck::dropout_fwd_cpu<float>(n, x.data(), 0.5, 1234, offset, y.data(), mask.data());
                     offset += static_cast<uint64_t>(n);  // a fresh mask per call, as in training
                   }),
           bytes, "GB/s");
    report("dropout", label, "bwd",
           time_ms(opt, [&] { ck::dropout_bwd_cpu<float>(n, dy.data(), mask.data(), 0.5, dx.data()); }), bytes, "GB/s");
  }
}

void bench_relu(const Options& opt) {
  int64_t n = numel(kReluShape);
  auto x = randn(n, 8);
  std::vector<float> y(n);
  report("relu", shape_str(kReluShape) + " (extra)", "fwd",
         time_ms(opt, [&] { ck::relu_fwd_cpu<float>(n, x.data(), y.data()); }), 8.0 * n, "GB/s");
}

[[noreturn]] void usage(const char* argv0, int rc) {
  std::fprintf(rc ? stderr : stdout,
               "usage: %s [--threads N] [--repeat N] [--warmup N] [--only gemm|conv2d|maxpool2d|dropout|relu]\n"
               "          [--peak GFLOPS --peak-threads N]\n",
               argv0);
  std::exit(rc);
}

int parse_int(const char* argv0, const char* flag, const char* v, int minimum) {
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (!end || *end || n < minimum || n > 1 << 20) {
    std::fprintf(stderr, "%s: %s needs an integer >= %d, got '%s'\n", argv0, flag, minimum, v);
    usage(argv0, 2);
  }
  return static_cast<int>(n);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage(argv[0], 0);
    if (i + 1 >= argc) usage(argv[0], 2);
    const char* v = argv[++i];
    if (a == "--threads")
      opt.threads = parse_int(argv[0], "--threads", v, 1);
    else if (a == "--repeat")
      opt.repeat = parse_int(argv[0], "--repeat", v, 1);
    else if (a == "--warmup")
      opt.warmup = parse_int(argv[0], "--warmup", v, 0);
    else if (a == "--only")
      opt.only = v;
    else if (a == "--peak")
      opt.peak = std::atof(v);
    else if (a == "--peak-threads")
      opt.peak_threads = parse_int(argv[0], "--peak-threads", v, 1);
    else
      usage(argv[0], 2);
  }
  if (!opt.only.empty() && opt.only != "gemm" && opt.only != "conv2d" && opt.only != "maxpool2d" &&
      opt.only != "dropout" && opt.only != "relu") {
    std::fprintf(stderr, "%s: --only must be gemm, conv2d, maxpool2d, dropout or relu, got '%s'\n", argv[0],
                 opt.only.c_str());
    return 2;
  }

  try {
    ck::runtime_init();
    if (opt.threads > 0) ck::set_num_threads(opt.threads);
    std::printf("cnnkit kernels, float32, %d thread(s), median of %d after %d warm-up; %s; %s\n", ck::get_num_threads(),
                opt.repeat, opt.warmup, ck::simd_level().c_str(), ("GEMM " + ck::gemm_isa()).c_str());
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    std::printf("OMP_WAIT_POLICY=%s (import cnnkit sets PASSIVE unless set; export it here to match)\n",
                policy ? policy : "unset");
    std::printf("%-9s %-24s %-10s %10s %10s\n", "op", "case", "pass", "ms", "rate");
    auto want = [&](const char* op) { return opt.only.empty() || opt.only == op; };
    if (want("gemm")) bench_gemm(opt);
    if (want("conv2d")) bench_conv(opt);
    if (want("maxpool2d")) bench_maxpool(opt);
    if (want("dropout")) bench_dropout(opt);
    if (want("relu")) bench_relu(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 1;
  }
  return 0;
}
