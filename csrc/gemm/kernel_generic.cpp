// Portable micro-kernels in plain C++ (compiled for the baseline instruction set): a 4 x 16 float tile and
// a 4 x 8 double tile, accumulated in local arrays the compiler keeps in vector registers. They run on
// any CPU, serve float64 everywhere, and are the reference the vector variants are tested against.
#include "gemm/kernel.h"

namespace ck::gemm_detail {
namespace {

template <typename T, int MR, int NR>
void micro_generic(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, T alpha, bool accumulate) {
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

const MicroKernel<float> kFloat{"generic", 4, 16, micro_generic<float, 4, 16>};
const MicroKernel<double> kDouble{"generic", 4, 8, micro_generic<double, 4, 8>};

}  // namespace

const MicroKernel<float>& sgemm_kernel_generic() { return kFloat; }
const MicroKernel<double>& dgemm_kernel_generic() { return kDouble; }

}  // namespace ck::gemm_detail
