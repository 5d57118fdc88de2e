// Per-thread scratch for a parallel region, allocated before the region opens: an allocation failure then
// surfaces as std::bad_alloc (MemoryError in Python) instead of escaping an OpenMP region and aborting.
#pragma once
#include <omp.h>

#include <cstddef>
#include <vector>

namespace ck {

template <typename T>
struct Scratch {
  std::vector<T> buf;
  size_t per_thread;
  Scratch(int nthreads, size_t per) : buf(size_t(nthreads) * per), per_thread(per) {}
  T* mine() { return buf.data() + size_t(omp_get_thread_num()) * per_thread; }
};

}  // namespace ck
