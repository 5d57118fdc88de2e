// Threading runtime. One layer owns the cores: OpenMP. The GEMM (csrc/gemm/) is single-threaded and only
// ever called from inside our own parallel regions, so no second thread pool spins against ours (on 2
// cores, a BLAS pool contending with OpenMP cost 4-6x).
//
// The thread count is one process-wide value held here, not OpenMP's nthreads-var: that one is per OS
// thread, so omp_set_num_threads in the main thread would not reach a training run in a worker thread.
// Every parallel region therefore names its team size: `#pragma omp parallel num_threads(ck::num_threads())`.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>

namespace ck {

namespace detail {
extern std::atomic<int> g_num_threads;
}

// Team size for every CPU parallel region, as set by set_num_threads from any thread.
inline int num_threads() { return detail::g_num_threads.load(std::memory_order_relaxed); }

void runtime_init();          // called once when the module loads: threads from OMP_NUM_THREADS or the cores; the GEMM
                              // variant from CNNKIT_ISA or CPUID; glibc's malloc thresholds from CNNKIT_MALLOC
                              // (throws std::invalid_argument for a bad CNNKIT_ISA or CNNKIT_MALLOC)
std::string malloc_policy();  // "retain" (freed memory kept for reuse), or "default" and why
std::string build_isa();      // the level this module's kernels were compiled for: generic, avx2, avx512 or native
std::string build_flags();    // the kernels' compiler flags
void set_num_threads(int n);  // OpenMP threads for every kernel, process-wide
int get_num_threads();        // num_threads()
int threads_in_region();      // team size of a region opened as the kernels open theirs (a test probe)
std::string openmp_version();
std::string simd_level();

// Below these sizes a kernel runs on the calling thread alone: waking a sleeping OpenMP team (the wait
// policy is passive) costs tens of microseconds, more than small work gains from a second core. PyTorch
// uses the same elementwise grain (at::internal::GRAIN_SIZE).
constexpr int64_t kGrainElements = 32768;  // elementwise kernels: elements
constexpr double kGrainFlops = 4e6;        // convolution passes: floating-point operations
constexpr double kGrainGemmFlops = 1e6;    // matmul

// GEMM on row-major matrices, single-threaded (the caller is already inside a parallel region): cnnkit's
// own packed GEMM (gemm/gemm.h), float32 on the micro-kernel variant chosen at load time.
// C = alpha * op(A) * op(B) + beta * C
// `packed` (float32 only; float64 ignores it) is op(A) packed once for many calls (gemm/gemm.h).
class PackedA;
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc, const PackedA* packed = nullptr);
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc, const PackedA* packed = nullptr);

// CUDA runtime status (always defined; reports "built without CUDA" when it is).
int cuda_device_count(std::string* why);
bool cuda_built();

}  // namespace ck
