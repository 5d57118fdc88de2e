// The blocked GEMM driver (BLIS's five loops around the micro-kernel) and the variant dispatch.
//
// Loops, outermost first: columns of C in blocks of nc; depth in blocks of kc, packing B's kc x nc block
// (sized for L2); rows in blocks of mc, packing A's mc x kc block; then strips of mr rows (the A panel,
// kc x mr, stays in L1) and, innermost, strips of nr columns streamed from the packed B block in L2.
// Edge tiles run the full micro-kernel into a local tile and copy the valid part.
#include "gemm/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>
#if defined(_WIN32)
#include <malloc.h>
#endif

#include "common/cpu_level.h"
#include "gemm/kernel.h"

namespace ck {

using gemm_detail::MicroKernel;

namespace {

// 64-byte-aligned blocks for the packed panels: C++17's aligned_alloc, or the Windows CRT's pair (whose
// blocks must be freed by _aligned_free). size is a multiple of the alignment.
void* aligned_malloc(size_t size) {
#if defined(_WIN32)
  return _aligned_malloc(size, 64);
#else
  return std::aligned_alloc(64, size);
#endif
}

void aligned_free(void* p) {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}

const MicroKernel<float>* g_sgemm = nullptr;  // set by gemm_init when the module loads

const MicroKernel<float>& sgemm_kernel() { return g_sgemm ? *g_sgemm : gemm_detail::sgemm_kernel_generic(); }

// The levels the variants are compiled for, as cnnkit._cpu (which picks the module) reads them.
bool cpu_has(const char* isa) {
  if (std::strcmp(isa, "avx512") == 0) return cpu_level_v4();
  if (std::strcmp(isa, "avx2") == 0) return cpu_level_v3();
  return std::strcmp(isa, "generic") == 0;
}

// The micro-kernels compiled into this module: its own level's and those below it.
const MicroKernel<float>* kernel_named(const std::string& name) {
#if defined(CNNKIT_GEMM_AVX512)
  if (name == "avx512") return gemm_detail::sgemm_kernel_avx512();
#endif
#if defined(CNNKIT_GEMM_AVX2)
  if (name == "avx2") return gemm_detail::sgemm_kernel_avx2();
#endif
  if (name == "generic") return &gemm_detail::sgemm_kernel_generic();
  return nullptr;
}

constexpr const char* kOrder[] = {"avx512", "avx2", "generic"};

// Blocking. kc: the depth of one packed block; a depth up to kMaxKC runs as one block, a deeper one is cut
// into equal blocks (so 288 = 9 x 32 runs whole, not as 256 + 32). nc: the packed B block, kc x nc, about
// kBBytes (half of a 1 MiB L2). mc: the packed A block.
constexpr int64_t kMaxKC = 384;
constexpr int64_t kBBytes = 512 * 1024;
constexpr int64_t kMaxMC = 192;
// Rows per chunk of a transposing pack: a chunk of one strip (64 x nr floats, 12 KiB at nr = 48) stays in L1.
constexpr int64_t kTransChunk = 64;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The depth blocks of a GEMM of depth k: `count` equal blocks of at most kMaxKC (the last may be shorter).
struct DepthBlocks {
  int64_t count, kc;
  explicit DepthBlocks(int64_t k) : count((k + kMaxKC - 1) / kMaxKC), kc((k + count - 1) / count) {}
};

// A short run copy the compiler inlines (a libc memcpy call per 48-float panel row cost more than the copy).
// Fixed 16-element steps keep GCC from turning the loop back into a memcpy call.
template <typename T>
inline void copy_run(T* __restrict dst, const T* __restrict src, int64_t len) {
  int64_t i = 0;
  for (; i + 16 <= len; i += 16)
#pragma GCC unroll 16
    for (int t = 0; t < 16; ++t) dst[i + t] = src[i + t];
  for (; i < len; ++i) dst[i] = src[i];
}

// Per-thread packing buffers, 64-byte aligned, grown on demand and kept for the thread's life.
template <typename T>
struct PackBuffers {
  T* a = nullptr;
  T* b = nullptr;
  size_t na = 0, nb = 0;
  ~PackBuffers() {
    aligned_free(a);
    aligned_free(b);
  }
  static bool grow(T** p, size_t* have, size_t want) {
    if (*have >= want) return true;
    aligned_free(*p);
    *p = static_cast<T*>(aligned_malloc(round_up(int64_t(want * sizeof(T)), 64)));
    *have = *p ? want : 0;
    return *p != nullptr;
  }
};

template <typename T>
PackBuffers<T>& buffers() {
  thread_local PackBuffers<T> buf;
  return buf;
}

// A (op(A) is m x k) rows [i0, i0 + mc), depth [k0, k0 + kc) -> strips of mr rows: dst[s][kk][i].
template <typename T>
void pack_a(bool trans, const T* a, int64_t lda, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, T* dst) {
  for (int64_t s = 0; s < mc; s += mr) {
    const int64_t rows = std::min<int64_t>(mr, mc - s);
    T* d = dst + s * kc;
    if (trans) {  // op(A)(i, kk) = a[kk * lda + i]: each depth step is a contiguous run of rows
      for (int64_t kk = 0; kk < kc; ++kk) {
        const T* src = a + (k0 + kk) * lda + i0 + s;
        T* dk = d + kk * mr;
        for (int64_t i = 0; i < rows; ++i) dk[i] = src[i];
        for (int64_t i = rows; i < mr; ++i) dk[i] = T(0);
      }
    } else if (rows == mr) {  // depth outer, rows inner: contiguous stores, mr sequential read streams
      const T* src = a + (i0 + s) * lda + k0;
      for (int64_t kk = 0; kk < kc; ++kk) {
        T* dk = d + kk * mr;
        for (int64_t i = 0; i < mr; ++i) dk[i] = src[i * lda + kk];
      }
    } else {
      for (int64_t i = 0; i < rows; ++i) {
        const T* src = a + (i0 + s + i) * lda + k0;
        for (int64_t kk = 0; kk < kc; ++kk) d[kk * mr + i] = src[kk];
      }
      for (int64_t i = rows; i < mr; ++i)
        for (int64_t kk = 0; kk < kc; ++kk) d[kk * mr + i] = T(0);
    }
  }
}

// B given as a row-major matrix: op(B) is k x n.
template <typename T>
void pack_b_matrix(bool trans, const T* b, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr,
                   T* dst) {
  for (int64_t s = 0; s < nc; s += nr) {
    const int64_t cols = std::min<int64_t>(nr, nc - s);
    T* d = dst + s * kc;
    if (!trans) {  // row kk of the strip is contiguous in b
      for (int64_t kk = 0; kk < kc; ++kk) {
        const T* src = b + (k0 + kk) * ldb + j0 + s;
        T* dk = d + kk * nr;
        copy_run(dk, src, cols);
        for (int64_t j = cols; j < nr; ++j) dk[j] = T(0);
      }
    } else {  // op(B)(kk, j) = b[j * ldb + kk]: column j of the strip is contiguous in b. Transposed in
              // chunks of kTransChunk rows, so the chunk of the strip being written stays in L1.
      for (int64_t c0 = 0; c0 < kc; c0 += kTransChunk) {
        const int64_t len = std::min(kTransChunk, kc - c0);
        T* dc = d + c0 * nr;
        for (int64_t j = 0; j < cols; ++j) {
          const T* src = b + (j0 + s + j) * ldb + k0 + c0;
          for (int64_t kk = 0; kk < len; ++kk) dc[kk * nr + j] = src[kk];
        }
        for (int64_t kk = 0; kk < len; ++kk)
          for (int64_t j = cols; j < nr; ++j) dc[kk * nr + j] = T(0);
      }
    }
  }
}

template <typename T>
struct MatrixSourceB {
  bool trans;
  const T* b;
  int64_t ldb;
  void pack(int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, T* dst) const {
    pack_b_matrix(trans, b, ldb, k0, kc, j0, nc, nr, dst);
  }
};

// B from a RowGenerator: rows are generated into a small buffer in L1 and scattered into the strips.
struct GeneratedSourceB {
  const RowGenerator& g;
  bool trans;
  static constexpr int64_t kChunk = 1024;
  void pack(int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* dst) const {
    alignas(64) float buf[kChunk];
    if (!trans) {                              // row kk of B is row k0 + kk of g: scatter it across the strips
      const int64_t chunk = kChunk / nr * nr;  // whole strips per chunk
      for (int64_t kk = 0; kk < kc; ++kk) {
        for (int64_t c0 = 0; c0 < nc; c0 += chunk) {
          const int64_t len = std::min(chunk, nc - c0);
          g.row(k0 + kk, j0 + c0, len, buf);
          for (int64_t j = 0; j < len; j += nr) {
            const int64_t jj = c0 + j, cols = std::min<int64_t>(nr, len - j);
            float* d = dst + jj * kc + kk * nr;  // strip jj / nr starts at (jj / nr) * nr * kc = jj * kc
            copy_run(d, buf + j, cols);
            for (int64_t t = cols; t < nr; ++t) d[t] = 0.0f;
          }
        }
      }
      return;
    }
    // column j of B is row j0 + j of g, over depth [k0, k0 + kc): a column of one strip, written in chunks
    // of kTransChunk rows so the chunk of the strip stays in L1 while its columns fill in
    for (int64_t s = 0; s < nc; s += nr) {
      const int64_t cols = std::min<int64_t>(nr, nc - s);
      float* d = dst + s * kc;
      for (int64_t c0 = 0; c0 < kc; c0 += kTransChunk) {
        const int64_t len = std::min(kTransChunk, kc - c0);
        float* dc = d + c0 * nr;
        for (int64_t j = 0; j < cols; ++j) {
          g.row(j0 + s + j, k0 + c0, len, buf);
          for (int64_t kk = 0; kk < len; ++kk) dc[kk * nr + j] = buf[kk];
        }
        for (int64_t kk = 0; kk < len; ++kk)
          for (int64_t j = cols; j < nr; ++j) dc[kk * nr + j] = 0.0f;
      }
    }
  }
};

// The plain triple loop, used only when packing buffers cannot be allocated: correct, slow, no memory.
template <typename T, typename ElemB>
void gemm_unpacked(bool ta, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, ElemB b_at, T beta, T* c,
                   int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      T acc = 0;
      for (int64_t kk = 0; kk < k; ++kk) acc += (ta ? a[kk * lda + i] : a[i * lda + kk]) * b_at(kk, j);
      T* cij = c + i * ldc + j;
      *cij = beta == T(0) ? alpha * acc : alpha * acc + beta * *cij;
    }
  }
}

template <typename T>
void scale_c(int64_t m, int64_t n, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    T* ci = c + i * ldc;
    if (beta == T(0))
      std::fill(ci, ci + n, T(0));
    else
      for (int64_t j = 0; j < n; ++j) ci[j] *= beta;
  }
}

// Returns false when the packing buffers could not be allocated (the caller then runs gemm_unpacked).
// pre, when not null, is all of op(A) packed (PackedA's layout, pre_mpad rows per depth block).
template <typename T, typename SourceB>
bool gemm_blocked(const MicroKernel<T>& uk, bool ta, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                  const SourceB& b, T beta, T* c, int64_t ldc, const T* pre = nullptr, int64_t pre_mpad = 0) {
  const int mr = uk.mr, nr = uk.nr;
  const DepthBlocks db(k);
  const int64_t kblocks = db.count, kc_max = db.kc;
  const int64_t nc_max =
      std::max<int64_t>(nr, std::min(round_up(n, nr), kBBytes / int64_t(sizeof(T)) / kc_max / nr * nr));
  const int64_t mc_max = std::min(round_up(m, mr), kMaxMC / mr * mr);
  PackBuffers<T>& buf = buffers<T>();
  if ((!pre && !PackBuffers<T>::grow(&buf.a, &buf.na, size_t(mc_max * kc_max))) ||
      !PackBuffers<T>::grow(&buf.b, &buf.nb, size_t(nc_max * kc_max)))
    return false;
  // A general beta scales C once up front; then every depth block but the first accumulates.
  const bool beta_one = beta == T(1), beta_zero = beta == T(0);
  if (!beta_one && !beta_zero) scale_c(m, n, beta, c, ldc);
  alignas(64) T tile[16 * 64];  // mr * nr <= 1024 for every variant
  for (int64_t j0 = 0; j0 < n; j0 += nc_max) {
    const int64_t nc = std::min(nc_max, n - j0);
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      const int64_t k0 = kb * kc_max, kc = std::min(kc_max, k - k0);
      const bool acc = kb > 0 || !beta_zero;
      b.pack(k0, kc, j0, nc, nr, buf.b);
      for (int64_t i0 = 0; i0 < m; i0 += mc_max) {
        const int64_t mc = std::min(mc_max, m - i0);
        const T* ablock = pre ? pre + pre_mpad * k0 + i0 * kc : buf.a;
        if (!pre) pack_a(ta, a, lda, i0, mc, k0, kc, mr, buf.a);
        for (int64_t ir = 0; ir < mc; ir += mr) {
          const int64_t rows = std::min<int64_t>(mr, mc - ir);
          const T* ap = ablock + ir * kc;
          for (int64_t jr = 0; jr < nc; jr += nr) {
            const int64_t cols = std::min<int64_t>(nr, nc - jr);
            const T* bp = buf.b + jr * kc;
            T* cij = c + (i0 + ir) * ldc + j0 + jr;
            if (rows == mr && cols == nr) {
              uk.run(kc, ap, bp, cij, ldc, alpha, acc);
              continue;
            }
            uk.run(kc, ap, bp, tile, nr, alpha, false);
            for (int64_t i = 0; i < rows; ++i)
              for (int64_t j = 0; j < cols; ++j)
                cij[i * ldc + j] = acc ? cij[i * ldc + j] + tile[i * nr + j] : tile[i * nr + j];
          }
        }
      }
    }
  }
  return true;
}

template <typename T>
void gemm_matrix(const MicroKernel<T>& uk, bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                 int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == T(0)) {
    if (beta != T(1)) scale_c(m, n, beta, c, ldc);
    return;
  }
  if (gemm_blocked(uk, ta, m, n, k, alpha, a, lda, MatrixSourceB<T>{tb, b, ldb}, beta, c, ldc)) return;
  gemm_unpacked(
      ta, m, n, k, alpha, a, lda, [&](int64_t kk, int64_t j) { return tb ? b[j * ldb + kk] : b[kk * ldb + j]; }, beta,
      c, ldc);
}

}  // namespace

PackedA::PackedA(bool trans_a, int64_t m, int64_t k, const float* a, int64_t lda)
    : a_(a), ta_(trans_a), m_(m), k_(k), lda_(lda) {
  if (m <= 0 || k <= 0) return;
  const MicroKernel<float>& uk = sgemm_kernel();
  mpad_ = round_up(m, uk.mr);
  data_ = static_cast<float*>(aligned_malloc(size_t(round_up(mpad_ * k * int64_t(sizeof(float)), 64))));
  if (!data_) return;
  kernel_ = &uk;
  const DepthBlocks db(k);
  for (int64_t k0 = 0; k0 < k; k0 += db.kc)
    pack_a(trans_a, a, lda, 0, m, k0, std::min(db.kc, k - k0), uk.mr, data_ + mpad_ * k0);
}

PackedA::PackedA(PackedA&& o) noexcept { *this = std::move(o); }

PackedA& PackedA::operator=(PackedA&& o) noexcept {
  if (this != &o) {
    aligned_free(data_);
    data_ = std::exchange(o.data_, nullptr);
    kernel_ = o.kernel_;
    a_ = o.a_;
    ta_ = o.ta_;
    m_ = o.m_;
    k_ = o.k_;
    lda_ = o.lda_;
    mpad_ = o.mpad_;
  }
  return *this;
}

PackedA::~PackedA() { aligned_free(data_); }

namespace {
// The packed panels of `packed` when it was built for exactly this GEMM's A and the kernel in use, else null.
const float* usable(const PackedA* packed, const MicroKernel<float>& uk, bool ta, int64_t m, int64_t k, const float* a,
                    int64_t lda) {
  return packed && packed->matches(&uk, ta, m, k, a, lda) ? packed->data() : nullptr;
}
}  // namespace

void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
           int64_t ldb, float beta, float* c, int64_t ldc, const PackedA* packed) {
  const MicroKernel<float>& uk = sgemm_kernel();
  const float* pre = usable(packed, uk, ta, m, k, a, lda);
  if (!pre || m <= 0 || n <= 0 || k <= 0 || alpha == 0.0f) {
    gemm_matrix(uk, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (gemm_blocked(uk, ta, m, n, k, alpha, a, lda, MatrixSourceB<float>{tb, b, ldb}, beta, c, ldc, pre, packed->mpad()))
    return;
  gemm_matrix(uk, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void dgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
           const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  gemm_matrix(gemm_detail::dgemm_kernel_generic(), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void sgemm_generated_b(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                       const RowGenerator& b, float beta, float* c, int64_t ldc, const PackedA* packed) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.0f) {
    if (beta != 1.0f) scale_c(m, n, beta, c, ldc);
    return;
  }
  const MicroKernel<float>& uk = sgemm_kernel();
  const float* pre = usable(packed, uk, ta, m, k, a, lda);
  if (gemm_blocked(uk, ta, m, n, k, alpha, a, lda, GeneratedSourceB{b, tb}, beta, c, ldc, pre,
                   pre ? packed->mpad() : 0))
    return;
  // No memory for the packed blocks: generate B one element at a time.
  gemm_unpacked(
      ta, m, n, k, alpha, a, lda,
      [&](int64_t kk, int64_t j) {
        float v;
        if (tb)
          b.row(j, kk, 1, &v);
        else
          b.row(kk, j, 1, &v);
        return v;
      },
      beta, c, ldc);
}

void sgemm_nt_dot(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                  int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  sgemm_kernel().dot_nt(m, n, std::max<int64_t>(k, 0), alpha, a, lda, b, ldb, accumulate, c, ldc);
}

std::string gemm_isa() { return sgemm_kernel().name; }

std::string gemm_isa_supported() {
  std::string out;
  for (const char* name : kOrder)
    if (kernel_named(name) && cpu_has(name)) out += (out.empty() ? "" : ",") + std::string(name);
  return out;
}

void set_gemm_isa(const std::string& name) {
  const MicroKernel<float>* k = kernel_named(name);
  if (!k && (name == "avx512" || name == "avx2"))
    throw std::invalid_argument("CNNKIT_ISA: '" + name +
                                "' kernels are not compiled into this build (supported: " + gemm_isa_supported() + ")");
  if (!k) throw std::invalid_argument("CNNKIT_ISA must be one of avx512, avx2, generic, got '" + name + "'");
  if (!cpu_has(name.c_str()))
    throw std::invalid_argument("CNNKIT_ISA: this CPU cannot run '" + name + "' (supported: " + gemm_isa_supported() +
                                ")");
  g_sgemm = k;
}

void gemm_init() {
  const char* env = std::getenv("CNNKIT_ISA");
  if (env && *env) {
    set_gemm_isa(env);
    return;
  }
  for (const char* name : kOrder) {
    const MicroKernel<float>* k = kernel_named(name);
    if (k && cpu_has(name)) {
      g_sgemm = k;
      return;
    }
  }
}

}  // namespace ck
