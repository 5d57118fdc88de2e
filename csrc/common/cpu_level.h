// Which of cnnkit's x86-64 instruction-set levels this CPU and operating system run: the psABI levels
// x86-64-v4 (AVX-512 F/CD/BW/DQ/VL) and x86-64-v3 (AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE), each with the OS
// saving the wider registers (XCR0). Header-only and baseline code, so that cnnkit._cpu (which picks the
// kernel module before any is loaded) and the GEMM's in-module switch ask the same question.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#define CNNKIT_CPU_X86 1
#if defined(_MSC_VER)
#include <immintrin.h>
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace ck {

#if defined(CNNKIT_CPU_X86)
// CPUID and XGETBV read directly (not __builtin_cpu_supports, whose level names only GCC 12+ knows): the
// same code for GCC, Clang and clang-cl, and baseline instructions only.
inline bool cpu_bit(unsigned leaf, unsigned sub, int reg, int bit) {
  unsigned r[4] = {0, 0, 0, 0};
#if defined(_MSC_VER)
  int v[4];
  __cpuidex(v, int(leaf), int(sub));
  for (int i = 0; i < 4; ++i) r[i] = unsigned(v[i]);
#else
  if (!__get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3])) return false;  // leaf not implemented
#endif
  return (r[reg] >> bit) & 1u;
}

inline unsigned long long cpu_xcr0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned lo, hi;
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));  // xgetbv, without -mxsave
  return (static_cast<unsigned long long>(hi) << 32) | lo;
#endif
}

enum { kEax, kEbx, kEcx, kEdx };

inline bool cpu_level_v3() {
  if (!cpu_bit(1, 0, kEcx, 27) || (cpu_xcr0() & 0x6) != 0x6) return false;  // OSXSAVE; xmm + ymm state saved
  return cpu_bit(1, 0, kEcx, 12) && cpu_bit(1, 0, kEcx, 22) && cpu_bit(1, 0, kEcx, 29) &&  // FMA MOVBE F16C
         cpu_bit(7, 0, kEbx, 3) && cpu_bit(7, 0, kEbx, 5) && cpu_bit(7, 0, kEbx, 8) &&     // BMI1 AVX2 BMI2
         cpu_bit(0x80000001, 0, kEcx, 5);                                                  // LZCNT
}

inline bool cpu_level_v4() {
  if (!cpu_level_v3() || (cpu_xcr0() & 0xe6) != 0xe6) return false;  // + opmask and zmm state saved
  return cpu_bit(7, 0, kEbx, 16) && cpu_bit(7, 0, kEbx, 17) && cpu_bit(7, 0, kEbx, 28) &&  // F DQ CD
         cpu_bit(7, 0, kEbx, 30) && cpu_bit(7, 0, kEbx, 31);                               // BW VL
}
#else
inline bool cpu_level_v3() { return false; }
inline bool cpu_level_v4() { return false; }
#endif

// "avx512,avx2,generic", "avx2,generic" or "generic": the levels this CPU runs, best first.
inline const char* cpu_levels() {
  if (cpu_level_v4()) return "avx512,avx2,generic";
  if (cpu_level_v3()) return "avx2,generic";
  return "generic";
}

}  // namespace ck
