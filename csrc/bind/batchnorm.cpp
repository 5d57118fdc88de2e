// cnnkit._C's BatchNorm functions (CPU).
#include "bind/common.h"
#include "ops/batchnorm.h"

using namespace ck::bind;

namespace {

// (N, C, S) view of a BatchNorm input: (N, C), (N, C, L) or (N, C, H, W).
std::array<int64_t, 3> ncs(const char* op, const py::array& x) {
  if (x.ndim() < 2 || x.ndim() > 4)
    ck::fail(op, "x must be 2-D, 3-D or 4-D (N, C, ...), got shape ", ck::shape_str(shape_of(x)));
  int64_t S = 1;
  for (py::ssize_t d = 2; d < x.ndim(); ++d) S *= x.shape(d);
  return {x.shape(0), x.shape(1), S};
}

void batchnorm_stats(const py::array& x, const py::array& mean, const py::array& var) {
  const char* op = "batchnorm_stats";
  auto [N, C, S] = ncs(op, x);
  expect_shape(op, "mean", mean, {C});
  expect_shape(op, "var", var, {C});
  auto run = [&, N = N, C = C, S = S](auto tag) {
    using T = decltype(tag);
    const T* xp = ptr<T>(x, op, "x");
    T* mp = ptr<T>(mean, op, "mean", true);
    T* vp = ptr<T>(var, op, "var", true);
    py::gil_scoped_release nogil;
    ck::batchnorm_stats_cpu<T>(N, C, S, xp, mp, vp);
  };
  float_dtype(x, op, "x") == DType::f32 ? run(float{}) : run(double{});
}

void channel_affine(const py::array& x, const py::array& alpha, const py::array& beta, const py::array& y) {
  const char* op = "channel_affine";
  auto [N, C, S] = ncs(op, x);
  expect_shape(op, "alpha", alpha, {C});
  expect_shape(op, "beta", beta, {C});
  same_size(op, "x", x, "y", y);
  auto run = [&, N = N, C = C, S = S](auto tag) {
    using T = decltype(tag);
    const T* xp = ptr<T>(x, op, "x");
    const T* ap = ptr<T>(alpha, op, "alpha");
    const T* bp = ptr<T>(beta, op, "beta");
    T* yp = ptr<T>(y, op, "y", true);
    py::gil_scoped_release nogil;
    ck::channel_affine_cpu<T>(N, C, S, xp, ap, bp, yp);
  };
  float_dtype(x, op, "x") == DType::f32 ? run(float{}) : run(double{});
}

void batchnorm_bwd(const py::array& dy, const py::array& x, const py::array& mean, const py::array& invstd,
                   const py::object& weight, bool train, const py::object& dx, const py::array& sum_dy,
                   const py::array& dotp) {
  const char* op = "batchnorm_bwd";
  auto [N, C, S] = ncs(op, x);
  same_size(op, "x", x, "dy", dy);
  expect_shape(op, "mean", mean, {C});
  expect_shape(op, "invstd", invstd, {C});
  expect_shape(op, "sum_dy", sum_dy, {C});
  expect_shape(op, "dotp", dotp, {C});
  py::array wa, dxa;
  if (!weight.is_none()) {
    wa = weight.cast<py::array>();
    expect_shape(op, "weight", wa, {C});
  }
  if (!dx.is_none()) {
    dxa = dx.cast<py::array>();
    same_size(op, "x", x, "dx", dxa);
  }
  auto run = [&, N = N, C = C, S = S](auto tag) {
    using T = decltype(tag);
    const T* dyp = ptr<T>(dy, op, "dy");
    const T* xp = ptr<T>(x, op, "x");
    const T* mp = ptr<T>(mean, op, "mean");
    const T* ip = ptr<T>(invstd, op, "invstd");
    const T* wp = weight.is_none() ? nullptr : ptr<T>(wa, op, "weight");
    T* dxp = dx.is_none() ? nullptr : ptr<T>(dxa, op, "dx", true);
    double* sp = ptr<double>(sum_dy, op, "sum_dy", true);
    double* dp = ptr<double>(dotp, op, "dotp", true);
    py::gil_scoped_release nogil;
    ck::batchnorm_bwd_cpu<T>(N, C, S, dyp, xp, mp, ip, wp, train, dxp, sp, dp);
  };
  float_dtype(x, op, "x") == DType::f32 ? run(float{}) : run(double{});
}

}  // namespace

void register_batchnorm(py::module_& m) {
  m.def("batchnorm_stats", &batchnorm_stats, py::arg("x"), py::arg("mean"), py::arg("var"));
  m.def("channel_affine", &channel_affine, py::arg("x"), py::arg("alpha"), py::arg("beta"), py::arg("y"));
  m.def("batchnorm_bwd", &batchnorm_bwd, py::arg("dy"), py::arg("x"), py::arg("mean"), py::arg("invstd"),
        py::arg("weight").none(true), py::arg("train"), py::arg("dx").none(true), py::arg("sum_dy"), py::arg("dotp"));
}
