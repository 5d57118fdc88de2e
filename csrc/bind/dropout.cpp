// cnnkit._C's dropout functions: the CPU wrappers (numpy arrays) and the CUDA ones (device pointers).
#include "bind/common.h"
#include "ops/dropout.h"

using namespace ck::bind;

namespace {

void dropout_fwd(const py::array& x, const py::array& y, const py::array& mask, double p, uint64_t seed,
                 uint64_t offset) {
  const char* op = "dropout_fwd";
  ck::dropout_threshold(op, p);
  same_size(op, "x", x, "y", y);
  same_size(op, "x", x, "mask", mask);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = ptr<T>(x, op, "x");
    T* yp = ptr<T>(y, op, "y", true);
    uint8_t* mp = ptr<uint8_t>(mask, op, "mask", true);
    py::gil_scoped_release nogil;
    ck::dropout_fwd_cpu<T>(x.size(), xp, p, seed, offset, yp, mp);
  };
  float_dtype(x, op, "x") == DType::f32 ? run(float{}) : run(double{});
}

void dropout_bwd(const py::array& dy, const py::array& mask, const py::array& dx, double p) {
  const char* op = "dropout_bwd";
  ck::dropout_threshold(op, p);
  same_size(op, "dy", dy, "mask", mask);
  same_size(op, "dy", dy, "dx", dx);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = ptr<T>(dy, op, "dy");
    const uint8_t* mp = ptr<uint8_t>(mask, op, "mask");
    T* dxp = ptr<T>(dx, op, "dx", true);
    py::gil_scoped_release nogil;
    ck::dropout_bwd_cpu<T>(dy.size(), dyp, mp, p, dxp);
  };
  float_dtype(dy, op, "dy") == DType::f32 ? run(float{}) : run(double{});
}

}  // namespace

#if defined(CNNKIT_WITH_CUDA)
namespace {

void cu_dropout_fwd(std::uintptr_t x, std::uintptr_t y, std::uintptr_t mask, int64_t n, double p, uint64_t seed,
                    uint64_t offset, int dtype, std::uintptr_t stream) {
  const char* op = "dropout_fwd";
  ck::dropout_threshold(op, p);
  nonneg(op, n);
  nonnull(op, "x", x, n);
  nonnull(op, "y", y, n);
  nonnull(op, "mask", mask, n);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::dropout_fwd_cuda<T>(n, dptr<const T>(x), p, seed, offset, dptr<T>(y), dptr<uint8_t>(mask), as_stream(stream));
  });
}

void cu_dropout_bwd(std::uintptr_t dy, std::uintptr_t mask, std::uintptr_t dx, int64_t n, double p, int dtype,
                    std::uintptr_t stream) {
  const char* op = "dropout_bwd";
  ck::dropout_threshold(op, p);
  nonneg(op, n);
  nonnull(op, "dy", dy, n);
  nonnull(op, "mask", mask, n);
  nonnull(op, "dx", dx, n);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::dropout_bwd_cuda<T>(n, dptr<const T>(dy), dptr<const uint8_t>(mask), p, dptr<T>(dx), as_stream(stream));
  });
}

}  // namespace
#endif  // CNNKIT_WITH_CUDA

void register_dropout(py::module_& m) {
  m.def("dropout_fwd", &dropout_fwd, py::arg("x"), py::arg("y"), py::arg("mask"), py::arg("p"), py::arg("seed"),
        py::arg("offset"));
  m.def("dropout_bwd", &dropout_bwd, py::arg("dy"), py::arg("mask"), py::arg("dx"), py::arg("p"));
#if defined(CNNKIT_WITH_CUDA)
  m.def("dropout_fwd_cuda", &cu_dropout_fwd, py::arg("x"), py::arg("y"), py::arg("mask"), py::arg("n"), py::arg("p"),
        py::arg("seed"), py::arg("offset"), py::arg("dtype"), py::arg("stream"));
  m.def("dropout_bwd_cuda", &cu_dropout_bwd, py::arg("dy"), py::arg("mask"), py::arg("dx"), py::arg("n"), py::arg("p"),
        py::arg("dtype"), py::arg("stream"));
#endif
}
