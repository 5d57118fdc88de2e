// Host emulation shim for tools/cuda_emu/run.sh: runs CUDA kernels on CPU threads (one std::thread per CUDA
// thread, a std::barrier for __syncthreads, blocks one after another so a function-static __shared__ array is
// per block). Only what csrc/ops/*.cu uses is defined.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
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
enum cudaError_t { cudaSuccess = 0 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaSuccess"; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { std::memset(p, v, n); return cudaSuccess; }
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) { *p = std::malloc(n ? n : 1); return cudaSuccess; }
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { std::free(p); return cudaSuccess; }
inline std::mutex g_atomic;
template <class T> T atomicAdd(T* p, T v) { std::lock_guard<std::mutex> l(g_atomic); T o = *p; *p = o + v; return o; }
inline long g_launches = 0;
template <class F> void emu_launch(dim3 grid, dim3 block, F f) {
  ++g_launches;
  blockDim = block; gridDim = grid;


  for (unsigned z = 0; z < grid.z; ++z) for (unsigned y = 0; y < grid.y; ++y) for (unsigned x = 0; x < grid.x; ++x) {
    std::barrier<> bar(block.x); g_bar = &bar;
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < block.x; ++t) ts.emplace_back([&, t] { threadIdx = dim3(t); blockIdx = dim3(x, y, z); f(); });
    for (auto& th : ts) th.join();
  }
}
