// Dense matrix product on cnnkit's own threading layer: C = op(A) @ op(B) (+ C when accumulating).
// Linear layers use this instead of numpy's matmul so that training never wakes a second BLAS thread
// pool (numpy's OpenBLAS), whose spinning workers would contend with OpenMP's on small machines.
#pragma once
#include <cstdint>

namespace ck {

// A is (M, K) or, with trans_a, stored (K, M); B is (K, N) or, with trans_b, stored (N, K); C (M, N).
// All row-major and contiguous. Writes C (=), or accumulates (+=) when accumulate is true.
template <typename T>
void matmul_cpu(int64_t M, int64_t N, int64_t K, const T* a, bool trans_a, const T* b, bool trans_b, T* c,
                bool accumulate);

}  // namespace ck
