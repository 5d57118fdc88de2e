// Host emulation of nvcuda::wmma for tools/cuda_emu/run.sh (stands in for CUDA's <mma.h>): only the TF32
// m16n16k8 float-accumulate subset that csrc/ops/conv2d.cu uses, with the semantics of the CUDA C++ guide
// (Warp Matrix Functions). A fragment's lane mapping is opaque on a GPU, so here every lane holds the whole
// tile (row-major: a is M x K, b is K x N, c is M x N): loads and mma are per-lane and need no exchange;
// store_matrix_sync has lane l write elements l, l + 32, ... so a warp's store never races with itself.
// __float_to_tf32 is cvt.rna.tf32.f32: round to nearest (ties away from zero) to 10 mantissa bits.
// mma_sync uses what the tensor core uses of a TF32 operand: its top 19 bits (the low 13 are dropped), and
// counts in g_wmma_unrounded every operand that had any of those bits set, so a check can prove that the
// kernel rounded its operands (a GPU would silently truncate them). Products of TF32 values are exact in
// float; they are added to the accumulator in float, in k order.
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <cuda_runtime.h>  // threadIdx (the shim)

inline std::atomic<long> g_wmma_unrounded{0};

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

inline float __float_to_tf32(float in) {
  if (!std::isfinite(in)) return in;
  uint32_t u;
  std::memcpy(&u, &in, 4);
  u = (u + 0x1000u) & ~0x1fffu;  // sign-magnitude: adding half an ulp to the magnitude rounds ties away
  float out;
  std::memcpy(&out, &u, 4);
  return out;
}

namespace detail {
template <class Use, int M, int N, int K> struct shape;
template <int M, int N, int K> struct shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };
inline unsigned lane() { return threadIdx.x % 32u; }
// wmma's rules for load/store_matrix_sync (CUDA C++ guide, Warp Matrix Functions): the pointer 256-bit (32-byte)
// aligned, ldm a multiple of 16 bytes (4 floats). A GPU gives undefined results otherwise; here it is a violation.
inline void check_fragment_ptr(const void* p, unsigned ldm, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || ldm % 4 != 0)
    emu_violation("wmma %s: pointer %p must be 32-byte aligned and ldm %u a multiple of 4 floats", what, p, ldm);
}
// The operand as a tensor core reads it: the top 19 bits of a TF32 value in a float.
inline float tf32_operand(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if (u & 0x1fffu) {
    ++g_wmma_unrounded;
    u &= ~0x1fffu;
  }
  std::memcpy(&v, &u, 4);
  return v;
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 8, "emulated wmma: only m16n16k8 (TF32) is implemented");
  static constexpr int rows = detail::shape<Use, M, N, K>::rows, cols = detail::shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;  // the whole tile (a GPU lane holds a share of it)
  float x[num_elements];
};

template <class Use, int M, int N, int K, class T, class L>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  for (float& e : f.x) e = v;
}

// Element (r, c) of a row_major matrix is p[r * ldm + c]; of a col_major one, p[r + c * ldm].
template <class Use, int M, int N, int K, class L>
void load_matrix_sync(fragment<Use, M, N, K, precision::tf32, L>& f, const float* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, precision::tf32, L>;
  static_assert(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>, "operand needs a layout");
  detail::check_fragment_ptr(p, ldm, "load_matrix_sync");
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = std::is_same_v<L, row_major> ? p[size_t(r) * ldm + c] : p[r + size_t(c) * ldm];
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  detail::check_fragment_ptr(p, ldm, "store_matrix_sync");
  for (unsigned i = detail::lane(); i < unsigned(M * N); i += 32) {
    const unsigned r = i / N, c = i % N;
    p[layout == mem_row_major ? size_t(r) * ldm + c : r + size_t(c) * ldm] = f.x[i];
  }
}

// d = a * b + c (d may alias c).
template <int M, int N, int K, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, precision::tf32, LA>& a,
              const fragment<matrix_b, M, N, K, precision::tf32, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k) acc += detail::tf32_operand(a.x[i * K + k]) * detail::tf32_operand(b.x[k * N + j]);
      out[i * N + j] = acc;
    }
  std::memcpy(d.x, out, sizeof out);
}

}  // namespace wmma
}  // namespace nvcuda
