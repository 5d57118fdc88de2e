// The micro-kernel table behind csrc/gemm/gemm.h: one entry per instruction-set variant, each defined in
// its own translation unit compiled for that instruction set (kernel_<isa>.cpp).
#pragma once
#include <cstdint>

namespace ck::gemm_detail {

// One register-blocked micro-kernel: C[mr x nr] (row stride ldc) = alpha * A_panel * B_panel (+ C when
// accumulate). A_panel holds kc columns of mr values (a[kk*mr + i]); B_panel kc rows of nr values
// (b[kk*nr + j]), 64-byte aligned. Always a full tile: the driver handles edges.
template <typename T>
struct MicroKernel {
  const char* name;
  int mr, nr;
  void (*run)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, T alpha, bool accumulate);
  // C (m x n) = alpha * A * B^T (+ C): dot products along contiguous rows, no packing (dot_kernel.h).
  void (*dot_nt)(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b, int64_t ldb,
                 bool accumulate, T* c, int64_t ldc);
};

const MicroKernel<float>* sgemm_kernel_avx512();  // null when not compiled in (not an x86-64 build)
const MicroKernel<float>* sgemm_kernel_avx2();
const MicroKernel<float>& sgemm_kernel_generic();
const MicroKernel<double>& dgemm_kernel_generic();

}  // namespace ck::gemm_detail
