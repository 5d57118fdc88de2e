// cnnkit._C's maxpool2d functions: the CPU wrappers (numpy arrays) and the CUDA ones (device pointers).
#include "bind/common.h"
#include "ops/maxpool2d.h"

using namespace ck::bind;

namespace {

std::vector<int64_t> maxpool2d_out_shape(const std::vector<int64_t>& x_shape, Pair kernel, Pair stride, Pair padding,
                                         Pair dilation, bool ceil_mode) {
  auto p = ck::make_maxpool2d_params("maxpool2d_fwd", x_shape, kernel[0], kernel[1], stride[0], stride[1], padding[0],
                                     padding[1], dilation[0], dilation[1], ceil_mode);
  return {p.N, p.C, p.P, p.Q};
}

void maxpool2d_fwd(const py::array& x, const py::array& y, const py::array& indices, Pair kernel, Pair stride,
                   Pair padding, Pair dilation, bool ceil_mode) {
  const char* op = "maxpool2d_fwd";
  auto p = ck::make_maxpool2d_params(op, shape_of(x), kernel[0], kernel[1], stride[0], stride[1], padding[0],
                                     padding[1], dilation[0], dilation[1], ceil_mode);
  expect_shape(op, "y", y, {p.N, p.C, p.P, p.Q});
  expect_shape(op, "indices", indices, {p.N, p.C, p.P, p.Q});
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = ptr<T>(x, op, "x");
    T* yp = ptr<T>(y, op, "y", true);
    int64_t* ip = ptr<int64_t>(indices, op, "indices", true);
    py::gil_scoped_release nogil;
    ck::maxpool2d_fwd_cpu<T>(p, xp, yp, ip);
  };
  float_dtype(x, op, "x") == DType::f32 ? run(float{}) : run(double{});
}

void maxpool2d_bwd(const py::array& dy, const py::array& indices, const py::array& dx) {
  const char* op = "maxpool2d_bwd";
  if (dy.ndim() != 4) ck::fail(op, "dy must be 4-D (N, C, P, Q), got shape ", ck::shape_str(shape_of(dy)));
  if (dx.ndim() != 4) ck::fail(op, "dx must be 4-D (N, C, H, W), got shape ", ck::shape_str(shape_of(dx)));
  expect_shape(op, "indices", indices, shape_of(dy));
  if (dy.shape(0) != dx.shape(0) || dy.shape(1) != dx.shape(1))
    ck::fail(op, "dy and x_shape must agree in (N, C), got ", ck::shape_str(shape_of(dy)), " and ",
             ck::shape_str(shape_of(dx)));
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = ptr<T>(dy, op, "dy");
    const int64_t* ip = ptr<int64_t>(indices, op, "indices");
    T* dxp = ptr<T>(dx, op, "dx", true);
    const int64_t planes = dx.shape(0) * dx.shape(1), HW = dx.shape(2) * dx.shape(3), PQ = dy.shape(2) * dy.shape(3);
    py::gil_scoped_release nogil;
    ck::maxpool2d_bwd_cpu<T>(planes, HW, PQ, dyp, ip, dxp);
  };
  float_dtype(dy, op, "dy") == DType::f32 ? run(float{}) : run(double{});
}

}  // namespace

#if defined(CNNKIT_WITH_CUDA)
namespace {

void cu_maxpool2d_fwd(std::uintptr_t x, std::uintptr_t y, std::uintptr_t indices, const Shape& x_shape, Pair kernel,
                      Pair stride, Pair padding, Pair dilation, bool ceil_mode, int dtype, std::uintptr_t stream) {
  const char* op = "maxpool2d_fwd";
  auto p = ck::make_maxpool2d_params(op, x_shape, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
                                     dilation[0], dilation[1], ceil_mode);
  nonnull(op, "x", x, numel(x_shape));
  nonnull(op, "y", y, p.N * p.C * p.P * p.Q);
  nonnull(op, "indices", indices, p.N * p.C * p.P * p.Q);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::maxpool2d_fwd_cuda<T>(p, dptr<const T>(x), dptr<T>(y), dptr<int64_t>(indices), as_stream(stream));
  });
}

void cu_maxpool2d_bwd(std::uintptr_t dy, std::uintptr_t indices, std::uintptr_t dx, const Shape& dy_shape,
                      const Shape& x_shape, int dtype, std::uintptr_t stream) {
  const char* op = "maxpool2d_bwd";
  if (dy_shape.size() != 4) ck::fail(op, "dy must be 4-D (N, C, P, Q), got shape ", ck::shape_str(dy_shape));
  if (x_shape.size() != 4) ck::fail(op, "dx must be 4-D (N, C, H, W), got shape ", ck::shape_str(x_shape));
  for (int64_t d : dy_shape)
    if (d < 0) ck::fail(op, "dy shape must be non-negative, got ", ck::shape_str(dy_shape));
  for (int64_t d : x_shape)
    if (d < 0) ck::fail(op, "x_shape must be non-negative, got ", ck::shape_str(x_shape));
  if (dy_shape[0] != x_shape[0] || dy_shape[1] != x_shape[1])
    ck::fail(op, "dy and x_shape must agree in (N, C), got ", ck::shape_str(dy_shape), " and ", ck::shape_str(x_shape));
  nonnull(op, "dy", dy, numel(dy_shape));
  nonnull(op, "indices", indices, numel(dy_shape));
  nonnull(op, "dx", dx, numel(x_shape));
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::maxpool2d_bwd_cuda<T>(x_shape[0] * x_shape[1], x_shape[2] * x_shape[3], dy_shape[2] * dy_shape[3],
                              dptr<const T>(dy), dptr<const int64_t>(indices), dptr<T>(dx), as_stream(stream));
  });
}

}  // namespace
#endif  // CNNKIT_WITH_CUDA

void register_maxpool2d(py::module_& m) {
  m.def("maxpool2d_out_shape", &maxpool2d_out_shape, py::arg("x_shape"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"));
  m.def("maxpool2d_fwd", &maxpool2d_fwd, py::arg("x"), py::arg("y"), py::arg("indices"), py::arg("kernel"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"));
  m.def("maxpool2d_bwd", &maxpool2d_bwd, py::arg("dy"), py::arg("indices"), py::arg("dx"));
#if defined(CNNKIT_WITH_CUDA)
  m.def("maxpool2d_fwd_cuda", &cu_maxpool2d_fwd, py::arg("x"), py::arg("y"), py::arg("indices"), py::arg("x_shape"),
        py::arg("kernel"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"),
        py::arg("dtype"), py::arg("stream"));
  m.def("maxpool2d_bwd_cuda", &cu_maxpool2d_bwd, py::arg("dy"), py::arg("indices"), py::arg("dx"), py::arg("dy_shape"),
        py::arg("x_shape"), py::arg("dtype"), py::arg("stream"));
#endif
}
