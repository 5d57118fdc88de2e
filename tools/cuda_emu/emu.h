// Shared helpers for the host-emulation checks (tools/cuda_emu/run.sh): every compare_*.cc file registers
// its checks with EMU_CASE(name) { ... }; emu_main.cc runs them all (or those named on the command line).
#pragma once
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

inline int fails = 0;
inline std::mt19937_64 rng(42);
inline CUstream_st* S = emu_stream();  // the caller's stream (the shim checks every launch uses it)

// max over i of |a - b| / (atol + |b|), NaN where both are NaN counting as equal
template <class T> double maxrel(const std::vector<T>& a, const std::vector<T>& b, double atol) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(double(a[i])) && std::isnan(double(b[i]))) continue;
    double d = std::fabs(double(a[i]) - double(b[i])) / (atol + std::fabs(double(b[i])));
    if (!(d <= e)) e = d;
  }
  return e;
}
// The max-pool backward on the GPU scatters with atomicAdd, so where windows overlap the order of the adds
// (and the emulator's thread pool, like a GPU, varies it from run to run) changes the rounding of each
// cell's sum; a relative error means nothing there, as random contributions can cancel to near zero.
// Each cell of dx (planes, HW), fed by m entries of dy (planes, PQ) through idx, is checked against the
// bound for two sums of the same m terms in different orders: each is within (m - 1) * u * sum|terms| of
// the exact sum (u = eps / 2), so they differ by at most (m - 1) * eps * sum|terms|. A cell with one term
// or none must match exactly. Returns the worst |a - b| / bound (<= 1 passes); *most = the largest m.
template <class T>
double scatter_sum_err_over_bound(int64_t planes, int64_t HW, int64_t PQ, const std::vector<T>& dy,
                                  const std::vector<int64_t>& idx, const std::vector<T>& a, const std::vector<T>& b,
                                  int* most = nullptr) {
  std::vector<double> mass(size_t(planes * HW), 0.0);
  std::vector<int> terms(size_t(planes * HW), 0);
  for (int64_t o = 0; o < planes * PQ; ++o) {
    if (idx[o] < 0 || idx[o] >= HW) continue;  // the kernel skips these too
    const size_t cell = size_t((o / PQ) * HW + idx[o]);
    mass[cell] += std::fabs(double(dy[o]));
    terms[cell] += 1;
  }
  const double eps = std::numeric_limits<T>::epsilon();
  double e = 0;
  int m = 0;
  for (size_t i = 0; i < mass.size(); ++i) {
    m = std::max(m, terms[i]);
    const double err = std::fabs(double(a[i]) - double(b[i]));
    const double r = terms[i] <= 1 ? (err == 0 ? 0.0 : INFINITY) : err / ((terms[i] - 1) * eps * mass[i]);
    if (!(r <= e)) e = r;
  }
  if (most) *most = m;
  return e;
}
#define CHECK(name, cond) do { if (!(cond)) { ++fails; printf("FAIL %s\n", name); } } while (0)
template <class T> std::vector<T> randn(size_t n) {
  std::normal_distribution<double> N; std::vector<T> v(n); for (auto& e : v) e = T(N(rng)); return v;
}

using EmuFn = void (*)();
inline std::vector<std::pair<const char*, EmuFn>>& emu_registry() { static std::vector<std::pair<const char*, EmuFn>> r; return r; }
inline int emu_register(const char* name, EmuFn f) { emu_registry().emplace_back(name, f); return 0; }
#define EMU_CASE(name) \
  static void emu_case_##name(); \
  static const int emu_reg_##name = emu_register(#name, emu_case_##name); \
  static void emu_case_##name()
