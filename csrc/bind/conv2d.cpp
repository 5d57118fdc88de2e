// cnnkit._C's conv2d functions: the CPU wrappers (numpy arrays) and the CUDA ones (device pointers).
#include "bind/common.h"
#include "ops/conv2d.h"
#include "ops/winograd.h"

using namespace ck::bind;

namespace {

// The CPU algorithm of a conv2d pass: "gemm" (im2col + GEMM, any shape) or "winograd" (F(4x4, 3x3): 3x3 kernel,
// stride 1, dilation 1). The Python ops layer resolves "auto" before calling; a shape "winograd" cannot do is
// refused (ValueError naming the reason), never silently run with the other algorithm.
bool use_winograd(const char* op, const std::string& algorithm, const ck::Conv2dParams& p) {
  if (algorithm == "gemm") return false;
  if (algorithm != "winograd") ck::fail(op, "algorithm must be 'gemm' or 'winograd', got '", algorithm, "'");
  ck::check_winograd(op, p);
  return true;
}

std::vector<int64_t> conv2d_out_shape(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                                      Pair stride, Pair padding, Pair dilation, int64_t groups) {
  auto p = ck::make_conv2d_params("conv2d", x_shape, w_shape, stride[0], stride[1], padding[0], padding[1], dilation[0],
                                  dilation[1], groups);
  return {p.N, p.K, p.P, p.Q};
}

void conv2d_fwd(const py::array& x, const py::array& w, const py::object& b, const py::array& y, Pair stride,
                Pair padding, Pair dilation, int64_t groups, const std::string& algorithm, bool relu) {
  const char* op = "conv2d_fwd";
  auto p = ck::make_conv2d_params(op, shape_of(x), shape_of(w), stride[0], stride[1], padding[0], padding[1],
                                  dilation[0], dilation[1], groups);
  expect_shape(op, "y", y, {p.N, p.K, p.P, p.Q});
  const bool wino = use_winograd(op, algorithm, p);
  py::array ba;
  if (!b.is_none()) {
    ba = b.cast<py::array>();
    expect_shape(op, "b", ba, {p.K});
  }
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = ptr<T>(x, op, "x");
    const T* wp = ptr<T>(w, op, "w");
    const T* bp = b.is_none() ? nullptr : ptr<T>(ba, op, "b");
    T* yp = ptr<T>(y, op, "y", true);
    py::gil_scoped_release nogil;
    if (!wino) return ck::conv2d_fwd_cpu<T>(p, xp, wp, bp, yp, relu);
    ck::conv2d_fwd_winograd_cpu<T>(p, xp, wp, bp, yp, relu);
  };
  float_dtype(x, op, "x") == DType::f32 ? run(float{}) : run(double{});
}

void conv2d_bwd_data(const py::array& dy, const py::array& w, const py::array& dx, Pair stride, Pair padding,
                     Pair dilation, int64_t groups, const std::string& algorithm) {
  const char* op = "conv2d_bwd_data";
  auto p = ck::make_conv2d_params(op, shape_of(dx), shape_of(w), stride[0], stride[1], padding[0], padding[1],
                                  dilation[0], dilation[1], groups);
  expect_shape(op, "dy", dy, {p.N, p.K, p.P, p.Q});
  const bool wino = use_winograd(op, algorithm, p);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = ptr<T>(dy, op, "dy");
    const T* wp = ptr<T>(w, op, "w");
    T* dxp = ptr<T>(dx, op, "dx", true);
    py::gil_scoped_release nogil;
    wino ? ck::conv2d_bwd_data_winograd_cpu<T>(p, dyp, wp, dxp) : ck::conv2d_bwd_data_cpu<T>(p, dyp, wp, dxp);
  };
  float_dtype(dy, op, "dy") == DType::f32 ? run(float{}) : run(double{});
}

void conv2d_bwd_weight(const py::array& dy, const py::array& x, const py::array& dw, Pair stride, Pair padding,
                       Pair dilation, int64_t groups, bool accumulate, const std::string& algorithm) {
  const char* op = "conv2d_bwd_weight";
  auto p = ck::make_conv2d_params(op, shape_of(x), shape_of(dw), stride[0], stride[1], padding[0], padding[1],
                                  dilation[0], dilation[1], groups);
  expect_shape(op, "dy", dy, {p.N, p.K, p.P, p.Q});
  const bool wino = use_winograd(op, algorithm, p);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = ptr<T>(dy, op, "dy");
    const T* xp = ptr<T>(x, op, "x");
    T* dwp = ptr<T>(dw, op, "dw", true);
    py::gil_scoped_release nogil;
    wino ? ck::conv2d_bwd_weight_winograd_cpu<T>(p, dyp, xp, dwp, accumulate)
         : ck::conv2d_bwd_weight_cpu<T>(p, dyp, xp, dwp, accumulate);
  };
  float_dtype(dy, op, "dy") == DType::f32 ? run(float{}) : run(double{});
}

void conv2d_bwd_bias(const py::array& dy, const py::array& db, bool accumulate) {
  const char* op = "conv2d_bwd_bias";
  if (dy.ndim() != 4) ck::fail(op, "dy must be 4-D (N, K, P, Q), got shape ", ck::shape_str(shape_of(dy)));
  expect_shape(op, "db", db, {dy.shape(1)});
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = ptr<T>(dy, op, "dy");
    T* dbp = ptr<T>(db, op, "db", true);
    const int64_t N = dy.shape(0), K = dy.shape(1), PQ = dy.shape(2) * dy.shape(3);
    py::gil_scoped_release nogil;
    ck::conv2d_bwd_bias_cpu<T>(N, K, PQ, dyp, dbp, accumulate);
  };
  float_dtype(dy, op, "dy") == DType::f32 ? run(float{}) : run(double{});
}

}  // namespace

#if defined(CNNKIT_WITH_CUDA)
namespace {

void cu_conv2d_fwd(std::uintptr_t x, std::uintptr_t w, std::uintptr_t b, std::uintptr_t y, const Shape& x_shape,
                   const Shape& w_shape, Pair stride, Pair padding, Pair dilation, int64_t groups, int dtype,
                   std::uintptr_t stream, bool tf32) {
  const char* op = "conv2d_fwd";
  auto p = ck::make_conv2d_params(op, x_shape, w_shape, stride[0], stride[1], padding[0], padding[1], dilation[0],
                                  dilation[1], groups);
  nonnull(op, "x", x, numel(x_shape));
  nonnull(op, "w", w, numel(w_shape));
  nonnull(op, "y", y, p.N * p.K * p.P * p.Q);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::conv2d_fwd_cuda<T>(p, dptr<const T>(x), dptr<const T>(w), b ? dptr<const T>(b) : nullptr, dptr<T>(y),
                           as_stream(stream), tf32);
  });
}

void cu_conv2d_bwd_data(std::uintptr_t dy, std::uintptr_t w, std::uintptr_t dx, const Shape& x_shape,
                        const Shape& w_shape, Pair stride, Pair padding, Pair dilation, int64_t groups, int dtype,
                        std::uintptr_t stream, bool tf32) {
  const char* op = "conv2d_bwd_data";
  auto p = ck::make_conv2d_params(op, x_shape, w_shape, stride[0], stride[1], padding[0], padding[1], dilation[0],
                                  dilation[1], groups);
  nonnull(op, "dy", dy, p.N * p.K * p.P * p.Q);
  nonnull(op, "w", w, numel(w_shape));
  nonnull(op, "dx", dx, numel(x_shape));
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::conv2d_bwd_data_cuda<T>(p, dptr<const T>(dy), dptr<const T>(w), dptr<T>(dx), as_stream(stream), tf32);
  });
}

void cu_conv2d_bwd_weight(std::uintptr_t dy, std::uintptr_t x, std::uintptr_t dw, const Shape& x_shape,
                          const Shape& w_shape, Pair stride, Pair padding, Pair dilation, int64_t groups,
                          bool accumulate, int dtype, std::uintptr_t stream, bool tf32) {
  const char* op = "conv2d_bwd_weight";
  auto p = ck::make_conv2d_params(op, x_shape, w_shape, stride[0], stride[1], padding[0], padding[1], dilation[0],
                                  dilation[1], groups);
  nonnull(op, "dy", dy, p.N * p.K * p.P * p.Q);
  nonnull(op, "x", x, numel(x_shape));
  nonnull(op, "dw", dw, numel(w_shape));
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::conv2d_bwd_weight_cuda<T>(p, dptr<const T>(dy), dptr<const T>(x), dptr<T>(dw), accumulate, as_stream(stream),
                                  tf32);
  });
}

void cu_conv2d_bwd_bias(std::uintptr_t dy, std::uintptr_t db, const Shape& dy_shape, bool accumulate, int dtype,
                        std::uintptr_t stream) {
  const char* op = "conv2d_bwd_bias";
  if (dy_shape.size() != 4) ck::fail(op, "dy must be 4-D (N, K, P, Q), got shape ", ck::shape_str(dy_shape));
  for (int64_t d : dy_shape)
    if (d < 0) ck::fail(op, "dy shape must be non-negative, got ", ck::shape_str(dy_shape));
  nonnull(op, "dy", dy, numel(dy_shape));
  nonnull(op, "db", db, dy_shape[1]);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::conv2d_bwd_bias_cuda<T>(dy_shape[0], dy_shape[1], dy_shape[2] * dy_shape[3], dptr<const T>(dy), dptr<T>(db),
                                accumulate, as_stream(stream));
  });
}

}  // namespace
#endif  // CNNKIT_WITH_CUDA

void register_conv2d(py::module_& m) {
  m.def("conv2d_out_shape", &conv2d_out_shape, py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"));
  m.def("conv2d_fwd", &conv2d_fwd, py::arg("x"), py::arg("w"), py::arg("b").none(true), py::arg("y"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("algorithm") = "gemm",
        py::arg("relu") = false);
  m.def("conv2d_bwd_data", &conv2d_bwd_data, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("algorithm") = "gemm");
  m.def("conv2d_bwd_weight", &conv2d_bwd_weight, py::arg("dy"), py::arg("x"), py::arg("dw"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("accumulate"),
        py::arg("algorithm") = "gemm");
  m.def("conv2d_bwd_bias", &conv2d_bwd_bias, py::arg("dy"), py::arg("db"), py::arg("accumulate"));
#if defined(CNNKIT_WITH_CUDA)
  // tf32 (conv2d, float32 only, default off; cnnkit.cuda.get_tf32()): tensor cores with TF32-rounded operands.
  m.def("conv2d_fwd_cuda", &cu_conv2d_fwd, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"), py::arg("x_shape"),
        py::arg("w_shape"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("dtype"), py::arg("stream"), py::arg("tf32") = false);
  m.def("conv2d_bwd_data_cuda", &cu_conv2d_bwd_data, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("x_shape"),
        py::arg("w_shape"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("dtype"), py::arg("stream"), py::arg("tf32") = false);
  m.def("conv2d_bwd_weight_cuda", &cu_conv2d_bwd_weight, py::arg("dy"), py::arg("x"), py::arg("dw"), py::arg("x_shape"),
        py::arg("w_shape"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("accumulate"), py::arg("dtype"), py::arg("stream"), py::arg("tf32") = false);
  m.def("conv2d_bwd_bias_cuda", &cu_conv2d_bwd_bias, py::arg("dy"), py::arg("db"), py::arg("dy_shape"),
        py::arg("accumulate"), py::arg("dtype"), py::arg("stream"));
#endif
}
