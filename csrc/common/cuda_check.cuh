// Shared helpers of the CUDA twins (csrc/ops/*.cu): launch checks and grid sizes. Kernels are launched on
// the caller's stream and nothing here synchronises, so a launch check only catches configuration errors
// (bad grid, no device, no kernel image for this GPU); faults inside a kernel surface at the next sync.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/check.h"

namespace ck {
namespace cudak {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items, capped so the grid size is always legal.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

// Throws std::invalid_argument("op: CUDA launch failed: ...") if the last launch failed.
inline void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail(op, "CUDA launch failed: ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
}

inline void check_call(const char* op, cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail(op, what, " failed: ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  }
}

}  // namespace cudak
}  // namespace ck
