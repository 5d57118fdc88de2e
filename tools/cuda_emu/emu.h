// Shared helpers for the host-emulation checks (tools/cuda_emu/run.sh): every compare_*.cc file registers
// its checks with EMU_CASE(name) { ... }; emu_main.cc runs them all (or those named on the command line).
#pragma once
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
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
