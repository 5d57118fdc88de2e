// The inner-product kernel: C (m x n) = alpha * A * B^T (+ C) with A (m x k) and B (n x k) both row-major,
// so every row is contiguous along the depth. Included by each kernel_<isa>.cpp and compiled there with
// that file's instruction set: GCC vector types of 16 floats become one zmm, two ymm or four xmm.
//
// It needs no packing: a 4 x 4 block of C keeps 16 vector accumulators, and each step along the depth loads
// 16 values of 4 rows of A and 4 rows of B for 16 FMAs. For a small C and a long depth (conv2d's weight
// gradient when C*R*S is small: an RGB or grey first layer) the packing that a GEMM would need costs more
// than the arithmetic.
#pragma once
#include <cstdint>
#include <cstring>

// Internal linkage (an unnamed namespace): every including file instantiates these for its own ISA.
namespace ck::gemm_detail {
namespace {

// VW float lanes per vector; blocks of up to BI x BJ outputs. Each variant picks VW, BI, BJ so that the
// BI * BJ accumulators, BJ loaded B vectors and one A vector fit its register file.
typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
template <int VW>
struct VecType;
template <>
struct VecType<4> {
  typedef v4f type;
};
template <>
struct VecType<8> {
  typedef v8f type;
};
template <>
struct VecType<16> {
  typedef v16f type;
};

template <int VW>
struct Vec {
  typedef typename VecType<VW>::type type;
  static type load(const float* p) {
    type v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static float sum(type v) {
    float s = 0;
    for (int l = 0; l < VW; ++l) s += v[l];
    return s;
  }
};

// One block of MI x NJ outputs, depth k: the vector part in steps of VW, then a scalar tail.
template <int VW, int MI, int NJ>
inline void dot_block(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                      float alpha, bool accumulate) {
  using V = Vec<VW>;
  typename V::type acc[MI][NJ];
  for (int i = 0; i < MI; ++i)
    for (int j = 0; j < NJ; ++j) acc[i][j] = typename V::type{};
  int64_t kk = 0;
  for (; kk + VW <= k; kk += VW) {
    typename V::type bv[NJ];
    for (int j = 0; j < NJ; ++j) bv[j] = V::load(b + j * ldb + kk);
    for (int i = 0; i < MI; ++i) {
      const typename V::type av = V::load(a + i * lda + kk);
      for (int j = 0; j < NJ; ++j) acc[i][j] += av * bv[j];
    }
  }
  for (int i = 0; i < MI; ++i) {
    for (int j = 0; j < NJ; ++j) {
      float s = V::sum(acc[i][j]);
      for (int64_t t = kk; t < k; ++t) s += a[i * lda + t] * b[j * ldb + t];
      float* cij = c + i * ldc + j;
      *cij = accumulate ? *cij + alpha * s : alpha * s;
    }
  }
}

// Rows [0, MI) against all n rows of B: blocks of BJ, then one block of the remaining n % BJ.
template <int VW, int MI, int BJ>
inline void dot_rows(int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                     int64_t ldc, float alpha, bool accumulate) {
  int64_t j = 0;
  for (; j + BJ <= n; j += BJ) dot_block<VW, MI, BJ>(k, a, lda, b + j * ldb, ldb, c + j, ldc, alpha, accumulate);
  if constexpr (BJ > 1) {
    if (n > j) dot_rows<VW, MI, BJ - 1>(n - j, k, a, lda, b + j * ldb, ldb, c + j, ldc, alpha, accumulate);
  }
}

// C (m x n) = alpha * A * B^T (+ C when accumulate): A (m x k) and B (n x k) row-major.
template <int VW, int BI, int BJ>
inline void dot_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                   int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + BI <= m; i += BI)
    dot_rows<VW, BI, BJ>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, alpha, accumulate);
  if constexpr (BI > 1) {
    if (m > i) dot_nt<VW, BI - 1, BJ>(m - i, n, k, alpha, a + i * lda, lda, b, ldb, accumulate, c + i * ldc, ldc);
  }
}

}  // namespace
}  // namespace ck::gemm_detail
