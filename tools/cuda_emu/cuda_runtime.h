// Host emulation shim for tools/cuda_emu/run.sh: runs CUDA kernels on CPU threads (one OS thread per CUDA
// thread, kept in a pool across blocks; a std::barrier for __syncthreads; blocks one after another, so a
// function-static __shared__ array is per block). Only what csrc/ops/*.cu uses is defined: an op that calls
// anything else (cudaDeviceSynchronize, cudaMemcpy, a host read of device memory through the runtime) does not
// compile here, which is on purpose.
// The shim is strict where a GPU would fail (CUDA Programming Guide, "Compute Capabilities" limits): a launch
// with a grid dimension of 0, gridDim.x > 2^31-1, gridDim.y or .z > 65535, a block of 0 or > 1024 threads, or
// more than 48 KiB of dynamic shared memory is reported as an EMU VIOLATION, not run, and leaves
// cudaErrorInvalidConfiguration for cudaGetLastError (as CUDA does), so the op's launch check throws. Blocks
// must be 1-D here (an emulator limit, reported as a violation too). Every launch, memset and stream-ordered
// malloc/free must name the case's stream (emu_stream(); a null stream would be the legacy default stream),
// a scratch block must be freed on the stream that allocated it, and none may be left allocated after a case.
// Static __shared__ arrays cannot be measured here: tools/cuda_emu/check_resources.sh reads them from the
// nvcc build. Modes for the audit cases (compare_audit.cc): g_emu_mode = kEmuDry validates launches without
// running them (memsets skipped, allocations reserved but untouched), kEmuEnds runs only the first and the last
// block of each grid (to reach int64 indices of huge tensors cheaply); emu_fail_next_* inject runtime errors.
#pragma once
#include <sys/mman.h>

#include <barrier>
#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>
struct dim3 { unsigned x = 1, y = 1, z = 1; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* g_bar = nullptr;
inline void __syncthreads() { g_bar->arrive_and_wait(); }
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__
#define __shared__ static
using std::isnan; using std::isfinite; using std::sqrt;
struct CUstream_st;
typedef CUstream_st* cudaStream_t;
enum cudaError_t {
  cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorLaunchOutOfResources = 7,
  cudaErrorInvalidConfiguration = 9
};

// ---- violations: counted (emu_main fails the run), or expected by a shim self-test ----
inline long g_violations = 0;
inline bool g_expect_violation = false;
inline long g_expected_violations = 0;
template <class... A> void emu_violation(const char* fmt, A... a) {
  if (g_expect_violation) { ++g_expected_violations; return; }
  ++g_violations;
  printf("EMU VIOLATION: ");
  printf(fmt, a...);
  printf("\n");
}

// ---- sticky-free last error, as cudaGetLastError reads and clears it ----
inline cudaError_t g_last_error = cudaSuccess;
inline cudaError_t cudaGetLastError() { const cudaError_t e = g_last_error; g_last_error = cudaSuccess; return e; }
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
  }
  return "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated error"; }

// ---- the case's stream: a non-null handle that only the emulator hands out ----
inline CUstream_st* emu_stream() { return reinterpret_cast<CUstream_st*>(uintptr_t(0x5157)); }
inline void emu_check_stream(cudaStream_t s, const char* what) {
  if (s != emu_stream())
    emu_violation("%s on stream %p, not the caller's stream %p (0 is the legacy default stream)", what, (void*)s,
                  (void*)emu_stream());
}

enum EmuMode { kEmuRun, kEmuDry, kEmuEnds };
inline EmuMode g_emu_mode = kEmuRun;
inline bool emu_fail_next_malloc = false, emu_fail_next_launch = false;

// ---- memory: big blocks are reserved lazily (MAP_NORESERVE), so a huge tensor costs only the pages touched ----
struct EmuBlock { size_t bytes; cudaStream_t stream; };
inline std::map<void*, EmuBlock>& emu_blocks() { static std::map<void*, EmuBlock> m; return m; }
inline void* emu_reserve(size_t n) {
  void* p = mmap(nullptr, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) { printf("emu_reserve(%zu) failed\n", n); std::abort(); }
  return p;
}
inline void emu_unreserve(void* p, size_t n) { munmap(p, n ? n : 1); }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  emu_check_stream(s, "cudaMemsetAsync");
  if (g_emu_mode == kEmuRun) std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t s) {
  emu_check_stream(s, "cudaMallocAsync");
  if (emu_fail_next_malloc) { emu_fail_next_malloc = false; *p = nullptr; return cudaErrorMemoryAllocation; }
  *p = emu_reserve(n);  // page-aligned, as cudaMalloc's 256-byte alignment or better
  emu_blocks()[*p] = EmuBlock{n, s};
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t s) {
  emu_check_stream(s, "cudaFreeAsync");
  if (p == nullptr) return cudaSuccess;
  auto it = emu_blocks().find(p);
  if (it == emu_blocks().end()) { emu_violation("cudaFreeAsync(%p): not a live cudaMallocAsync block", p); return cudaErrorInvalidValue; }
  if (it->second.stream != s) emu_violation("cudaFreeAsync(%p) on another stream than its cudaMallocAsync", p);
  emu_unreserve(p, it->second.bytes);
  emu_blocks().erase(it);
  return cudaSuccess;
}

inline std::mutex g_atomic;
template <class T> T atomicAdd(T* p, T v) { std::lock_guard<std::mutex> l(g_atomic); T o = *p; *p = o + v; return o; }
inline long g_launches = 0;
// The emulated CUDA threads: OS threads kept across blocks and launches (creating 256 threads per block cost
// most of the emulation's time). run(k, job) runs job(t) on workers t = 0..k-1 and returns when all are done.
class EmuPool {
 public:
  void run(unsigned k, const std::function<void(unsigned)>& job) {
    std::unique_lock<std::mutex> l(m_);
    while (ts_.size() < k) { const unsigned i = unsigned(ts_.size()); ts_.emplace_back([this, i] { work(i); }); }
    job_ = &job; active_ = k; remaining_ = k; ++gen_;
    go_.notify_all();
    done_.wait(l, [&] { return remaining_ == 0; });
    job_ = nullptr;
  }
  ~EmuPool() {
    { std::lock_guard<std::mutex> l(m_); stop_ = true; ++gen_; }
    go_.notify_all();
    for (auto& t : ts_) t.join();
  }

 private:
  void work(unsigned i) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> l(m_);
    for (;;) {
      go_.wait(l, [&] { return gen_ != seen; });
      seen = gen_;
      if (stop_) return;
      if (i >= active_) continue;
      const std::function<void(unsigned)>* job = job_;
      l.unlock();
      (*job)(i);
      l.lock();
      if (--remaining_ == 0) done_.notify_one();
    }
  }
  std::mutex m_;
  std::condition_variable go_, done_;
  std::vector<std::thread> ts_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned active_ = 0, remaining_ = 0;
  uint64_t gen_ = 0;
  bool stop_ = false;
};
inline EmuPool& emu_pool() { static EmuPool p; return p; }

constexpr size_t kEmuMaxSmem = 48 * 1024;  // dynamic + static without cudaFuncAttributeMaxDynamicSharedMemorySize

// Checks the configuration as the CUDA runtime does; on a bad one the kernel is not run and the last error is
// cudaErrorInvalidConfiguration. `where` is the launch's source text (launch_to_call.py).
template <class F> void emu_launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const char* where, F f) {
  ++g_launches;
  emu_check_stream(stream, where);
  const bool bad = grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 ||
                   grid.z > 65535 || block.x == 0 || uint64_t(block.x) * block.y * block.z > 1024 || block.y > 1024 ||
                   block.z > 64 || smem > kEmuMaxSmem;
  if (bad) {
    emu_violation("invalid launch configuration grid (%u, %u, %u) block (%u, %u, %u) dynamic smem %zu: %s", grid.x,
                  grid.y, grid.z, block.x, block.y, block.z, smem, where);
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (block.y != 1 || block.z != 1) {
    emu_violation("the emulator runs 1-D blocks only, got block (%u, %u, %u): %s", block.x, block.y, block.z, where);
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (emu_fail_next_launch) { emu_fail_next_launch = false; g_last_error = cudaErrorLaunchOutOfResources; return; }
  if (g_emu_mode == kEmuDry) return;
  blockDim = block; gridDim = grid;
  auto run_block = [&](unsigned x, unsigned y, unsigned z) {
    std::barrier<> bar(block.x); g_bar = &bar;
    emu_pool().run(block.x, [&](unsigned t) { threadIdx = dim3(t); blockIdx = dim3(x, y, z); f(); });
  };
  if (g_emu_mode == kEmuEnds) {
    run_block(0, 0, 0);
    if (grid.x * uint64_t(grid.y) * grid.z > 1) run_block(grid.x - 1, grid.y - 1, grid.z - 1);
    return;
  }
  for (unsigned z = 0; z < grid.z; ++z) for (unsigned y = 0; y < grid.y; ++y) for (unsigned x = 0; x < grid.x; ++x)
    run_block(x, y, z);
}
