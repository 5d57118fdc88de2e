// cnnkit's own GEMM: packed panels, a register-blocked micro-kernel per instruction set, cache blocking
// (the BLIS layering: Goto & van de Geijn 2008; Van Zee & van de Geijn 2015). docs/kernels.md describes it.
//
// All matrices are row-major. Every entry point is single-threaded: callers parallelise outside (each
// OpenMP thread runs its own GEMM on its own block), and each thread packs into its own buffers.
//
// The micro-kernel variant (avx512, avx2, generic) is chosen once, when the module loads, from CPUID;
// the environment variable CNNKIT_ISA overrides it. float64 runs the generic kernel on every machine: it
// serves gradient checks, where accuracy matters and speed does not.
#pragma once
#include <cstdint>
#include <string>

namespace ck {

// A float matrix given one row at a time, for operands that are never stored whole: row(i, j0, len, out)
// writes elements [j0, j0 + len) of row i into out. conv2d's implicit im2col is one: the GEMM packs its
// panels straight from the input image, so the column matrix is never materialised.
struct RowGenerator {
  virtual ~RowGenerator() = default;
  virtual void row(int64_t i, int64_t j0, int64_t len, float* out) const = 0;
};

class PackedA;

// C = alpha * op(A) * op(B) + beta * C. beta == 0 never reads C (it may hold garbage or NaN). `packed`, when
// given, is op(A) already in the micro-kernel's panels (built from the same a, lda, trans_a, m, k).
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc, const PackedA* packed = nullptr);
void dgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
           const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

// The same with op(B) taken from a generator g: op(B) = g's matrix (k x n) or, with trans_b, its
// transpose (g then holds n x k).
void sgemm_generated_b(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                       int64_t lda, const RowGenerator& b, float beta, float* c, int64_t ldc,
                       const PackedA* packed = nullptr);

// op(A) (m x k) packed once into the panels of the micro-kernel in use, for many GEMMs that share A: a
// convolution's weights across its work items, Winograd's transformed filters across its tile blocks. A
// GEMM packs A again for every call and every block of columns otherwise, which costs as much as a tenth of
// the arithmetic when A is a small weight matrix. The packed copy remembers what it was built from; a GEMM
// handed one that does not match its arguments (or the kernel in use) packs from `a` as usual. Empty (and
// ignored) when the memory cannot be had. Read-only once built: threads may share one.
class PackedA {
 public:
  PackedA() = default;
  PackedA(bool trans_a, int64_t m, int64_t k, const float* a, int64_t lda);
  PackedA(const PackedA&) = delete;
  PackedA& operator=(const PackedA&) = delete;
  PackedA(PackedA&& o) noexcept;
  PackedA& operator=(PackedA&& o) noexcept;
  ~PackedA();
  // The panels of depth block [k0, k0 + kc) start at data() + mpad() * k0; the strip of rows [i, i + mr)
  // at + i * kc within it.
  const float* data() const { return data_; }
  int64_t mpad() const { return mpad_; }
  bool matches(const void* kernel, bool trans_a, int64_t m, int64_t k, const float* a, int64_t lda) const {
    return data_ && kernel == kernel_ && trans_a == ta_ && m == m_ && k == k_ && a == a_ && lda == lda_;
  }

 private:
  float* data_ = nullptr;
  const void* kernel_ = nullptr;
  const float* a_ = nullptr;
  bool ta_ = false;
  int64_t m_ = 0, k_ = 0, lda_ = 0, mpad_ = 0;
};

// C (m x n) = alpha * A * B^T (+ C when accumulate), A (m x k) and B (n x k) row-major: blocks of dot
// products along the rows, with no packing. For a small C and a long depth, where packing would cost more
// than the arithmetic.
void sgemm_nt_dot(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                  int64_t ldb, bool accumulate, float* c, int64_t ldc);

// The micro-kernel variant in use: "avx512", "avx2" or "generic".
std::string gemm_isa();
// Which variants this CPU can run, best first (always ends with "generic").
std::string gemm_isa_supported();
// Selects a variant by name (throws std::invalid_argument naming the choices, or when this CPU lacks it).
// Not thread-safe against GEMMs running at the same moment: call it between kernels.
void set_gemm_isa(const std::string& name);
// Reads CNNKIT_ISA (when set) or CPUID; called once by runtime_init.
void gemm_init();

}  // namespace ck
