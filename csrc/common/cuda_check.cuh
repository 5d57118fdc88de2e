// Shared helpers of the CUDA twins (csrc/ops/*.cu): launch checks, grid sizes, stream-ordered scratch. Kernels
// are launched on the caller's stream and nothing here synchronises, so a launch check only catches
// configuration errors (bad grid, no device, no kernel image for this GPU); faults inside a kernel surface at
// the next sync. A CUDA runtime error throws std::runtime_error("op: ..."), which pybind11 turns into a Python
// RuntimeError (as CuPy's CUDARuntimeError is one); bad arguments stay std::invalid_argument (ValueError).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>

#include "common/check.h"

namespace ck {
namespace cudak {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items, capped so the grid size is always legal: at least 1 (a grid of
// 0 blocks is cudaErrorInvalidConfiguration; the loop then does nothing) and at most 65535 * 32 (the loops'
// indices are int64, so any n is covered).
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

// "op: what failed: cudaErrorName: description", as std::runtime_error.
[[noreturn]] inline void cuda_fail(const char* op, const char* what, cudaError_t err) {
  std::ostringstream os;
  os << op << ": " << what << " failed: " << cudaGetErrorName(err) << ": " << cudaGetErrorString(err);
  throw std::runtime_error(os.str());
}

// Throws std::runtime_error("op: CUDA launch failed: ...") if the last launch failed (and clears the error).
inline void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) cuda_fail(op, "CUDA launch", err);
}

// Throws std::runtime_error("op: what failed: ...") unless err is cudaSuccess (the error is cleared first).
inline void check_call(const char* op, cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    cuda_fail(op, what, err);
  }
}

// Scratch from the stream-ordered allocator (cudaMallocAsync): no synchronisation, and freed on the stream
// that allocated it, after the kernels queued before the free. free() reports an error; if an exception
// leaves the scope first, the destructor still queues the free (its error is dropped: one is in flight).
class StreamScratch {
 public:
  StreamScratch(const char* op, size_t bytes, cudaStream_t stream) : op_(op), stream_(stream) {
    check_call(op, cudaMallocAsync(&p_, bytes, stream), "cudaMallocAsync(scratch)");
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  ~StreamScratch() {
    if (p_ != nullptr) {
      cudaFreeAsync(p_, stream_);
      cudaGetLastError();
    }
  }
  char* get() const { return static_cast<char*>(p_); }
  void free() {
    void* p = p_;
    p_ = nullptr;
    check_call(op_, cudaFreeAsync(p, stream_), "cudaFreeAsync(scratch)");
  }

 private:
  const char* op_;
  cudaStream_t stream_;
  void* p_ = nullptr;
};

}  // namespace cudak
}  // namespace ck
