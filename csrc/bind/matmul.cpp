// cnnkit._C's matmul (CPU, BLAS).
#include "bind/common.h"
#include "ops/matmul.h"

using namespace ck::bind;

namespace {

void matmul(const py::array& a, const py::array& b, const py::array& c, bool trans_a, bool trans_b, bool accumulate) {
  const char* op = "matmul";
  if (a.ndim() != 2 || b.ndim() != 2 || c.ndim() != 2)
    ck::fail(op, "a, b and out must be 2-D, got shapes ", ck::shape_str(shape_of(a)), ", ", ck::shape_str(shape_of(b)),
             ", ", ck::shape_str(shape_of(c)));
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  if (K != Kb) ck::fail(op, "inner dimensions differ: a gives K=", K, ", b gives K=", Kb);
  expect_shape(op, "out", c, {M, N});
  if (M >= (int64_t(1) << 31) || N >= (int64_t(1) << 31) || K >= (int64_t(1) << 31))
    ck::fail(op, "dimensions must be < 2^31 for the 32-bit BLAS interface");
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* ap = ptr<T>(a, op, "a");
    const T* bp = ptr<T>(b, op, "b");
    T* cp = ptr<T>(c, op, "out", true);
    py::gil_scoped_release nogil;
    ck::matmul_cpu<T>(M, N, K, ap, trans_a, bp, trans_b, cp, accumulate);
  };
  float_dtype(a, op, "a") == DType::f32 ? run(float{}) : run(double{});
}

}  // namespace

void register_matmul(py::module_& m) {
  m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a"), py::arg("trans_b"),
        py::arg("accumulate"));
}
