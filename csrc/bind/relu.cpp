// cnnkit._C's relu functions: the CPU wrappers (numpy arrays) and the CUDA ones (device pointers).
#include "bind/common.h"
#include "ops/relu.h"

using namespace ck::bind;

namespace {

void relu_fwd(const py::array& x, const py::array& y) {
  const char* op = "relu_fwd";
  same_size(op, "x", x, "y", y);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = ptr<T>(x, op, "x");
    T* yp = ptr<T>(y, op, "y", true);
    py::gil_scoped_release nogil;
    ck::relu_fwd_cpu<T>(x.size(), xp, yp);
  };
  float_dtype(x, op, "x") == DType::f32 ? run(float{}) : run(double{});
}

void relu_bwd(const py::array& dy, const py::array& y, const py::array& dx) {
  const char* op = "relu_bwd";
  same_size(op, "dy", dy, "y", y);
  same_size(op, "dy", dy, "dx", dx);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = ptr<T>(dy, op, "dy");
    const T* yp = ptr<T>(y, op, "y");
    T* dxp = ptr<T>(dx, op, "dx", true);
    py::gil_scoped_release nogil;
    ck::relu_bwd_cpu<T>(dy.size(), dyp, yp, dxp);
  };
  float_dtype(dy, op, "dy") == DType::f32 ? run(float{}) : run(double{});
}

}  // namespace

#if defined(CNNKIT_WITH_CUDA)
namespace {

void cu_relu_fwd(std::uintptr_t x, std::uintptr_t y, int64_t n, int dtype, std::uintptr_t stream) {
  const char* op = "relu_fwd";
  nonneg(op, n);
  nonnull(op, "x", x, n);
  nonnull(op, "y", y, n);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::relu_fwd_cuda<T>(n, dptr<const T>(x), dptr<T>(y), as_stream(stream));
  });
}

void cu_relu_bwd(std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, int64_t n, int dtype, std::uintptr_t stream) {
  const char* op = "relu_bwd";
  nonneg(op, n);
  nonnull(op, "dy", dy, n);
  nonnull(op, "y", y, n);
  nonnull(op, "dx", dx, n);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::relu_bwd_cuda<T>(n, dptr<const T>(dy), dptr<const T>(y), dptr<T>(dx), as_stream(stream));
  });
}

}  // namespace
#endif  // CNNKIT_WITH_CUDA

void register_relu(py::module_& m) {
  m.def("relu_fwd", &relu_fwd, py::arg("x"), py::arg("y"));
  m.def("relu_bwd", &relu_bwd, py::arg("dy"), py::arg("y"), py::arg("dx"));
#if defined(CNNKIT_WITH_CUDA)
  m.def("relu_fwd_cuda", &cu_relu_fwd, py::arg("x"), py::arg("y"), py::arg("n"), py::arg("dtype"), py::arg("stream"));
  m.def("relu_bwd_cuda", &cu_relu_bwd, py::arg("dy"), py::arg("y"), py::arg("dx"), py::arg("n"), py::arg("dtype"),
        py::arg("stream"));
#endif
}
