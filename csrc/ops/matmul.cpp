// matmul: the output is cut into one block of rows (or of columns, when M is the smaller side) per
// thread, and each thread runs a single-threaded sgemm on its block. The block sizes follow the thread
// count, and OpenBLAS may pick another micro-kernel path for another size, so results are deterministic
// for a given thread count but may differ in the last bits between counts (as PyTorch's do).
#include "ops/matmul.h"

#include <algorithm>

#include "common/runtime.h"

namespace ck {

template <typename T>
void matmul_cpu(int64_t M, int64_t N, int64_t K, const T* a, bool trans_a, const T* b, bool trans_b, T* c,
                bool accumulate) {
  if (M == 0 || N == 0) return;
  const T beta = accumulate ? T(1) : T(0);
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  if (K == 0) {
    if (!accumulate) std::fill(c, c + M * N, T(0));
    return;
  }
  const int nthreads = num_threads();
  // Split the longer output side; blocks are multiples of 16 so the GEMM micro-kernels stay aligned.
  const bool by_rows = M >= N;
  const int64_t len = by_rows ? M : N;
  const bool big = 2.0 * double(M) * double(N) * double(K) >= kGrainGemmFlops;
  const int64_t nblk = big ? std::min<int64_t>(nthreads, std::max<int64_t>(1, len / 16)) : 1;
  const int64_t step = ((len + nblk - 1) / nblk + 15) / 16 * 16;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nblk > 1)
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const int64_t lo = blk * step, hi = std::min(len, lo + step);
    if (lo >= hi) continue;
    if (by_rows) {
      const T* ab = trans_a ? a + lo : a + lo * lda;
      gemm(trans_a, trans_b, hi - lo, N, K, T(1), ab, lda, b, ldb, beta, c + lo * N, N);
    } else {
      const T* bb = trans_b ? b + lo * ldb : b + lo;
      gemm(trans_a, trans_b, M, hi - lo, K, T(1), a, lda, bb, ldb, beta, c + lo, N);
    }
  }
}

template void matmul_cpu<float>(int64_t, int64_t, int64_t, const float*, bool, const float*, bool, float*, bool);
template void matmul_cpu<double>(int64_t, int64_t, int64_t, const double*, bool, const double*, bool, double*, bool);

}  // namespace ck
