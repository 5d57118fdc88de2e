// Portable micro-kernels in plain C++ (compiled for the baseline instruction set): a 4 x 8 float tile and
// a 4 x 4 double tile, each 8 SSE registers of accumulators in local arrays the compiler keeps in
// registers (a 4 x 16 float tile spilled and ran 4x slower). They run on any CPU and serve float64
// everywhere.
#include "gemm/dot_kernel.h"
#include "gemm/kernel.h"

namespace ck::gemm_detail {
namespace {

template <typename T, int MR, int NR>
void micro_generic(int64_t kc, const T* __restrict a, const T* __restrict b, T* c, int64_t ldc, T alpha,
                   bool accumulate) {
  T acc[MR][NR] = {};
  for (int64_t kk = 0; kk < kc; ++kk) {
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
    }
    a += MR;
    b += NR;
  }
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
    for (int j = 0; j < NR; ++j) ci[j] = accumulate ? ci[j] + alpha * acc[i][j] : alpha * acc[i][j];
  }
}

const MicroKernel<float> kFloat{"generic", 4, 8, micro_generic<float, 4, 8>, dot_nt<4, 2, 4>};
const MicroKernel<double> kDouble{"generic", 4, 4, micro_generic<double, 4, 4>, nullptr};

}  // namespace

const MicroKernel<float>& sgemm_kernel_generic() { return kFloat; }
const MicroKernel<double>& dgemm_kernel_generic() { return kDouble; }

}  // namespace ck::gemm_detail
