// CUDA runtime status. The runtime is linked statically and loads the driver lazily, so this module
// imports on machines with no GPU or no driver; these calls report why CUDA is unusable and never throw.
#include <cuda_runtime.h>

#include <string>

#include "common/runtime.h"

namespace ck {

int cuda_device_count(std::string* why) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why) *why = std::string("no CUDA device (") + cudaGetErrorName(err) + ": " + cudaGetErrorString(err) + ")";
    cudaGetLastError();  // clear the sticky error so a later call can retry
    return 0;
  }
  if (count == 0 && why) *why = "no CUDA device (the driver reports 0 devices)";
  if (count > 0 && why) *why = "ok";
  return count;
}

bool cuda_built() { return true; }

}  // namespace ck
