// The only pybind11 file: it checks array dtypes and layouts, takes raw pointers, releases the GIL and
// calls the kernels. It does no math and never copies or casts: outputs are allocated by the Python
// ops layer (cnnkit/ops.py) and every array must already be C-contiguous with the exact dtype.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/runtime.h"
#include "ops/batchnorm.h"
#include "ops/conv2d.h"
#include "ops/dropout.h"
#include "ops/matmul.h"
#include "ops/maxpool2d.h"
#include "ops/relu.h"
#include "ops/augment.h"

namespace py = pybind11;
using Pair = std::array<int64_t, 2>;

namespace {

std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// dtypes compare by value (numpy's PyArray_EquivTypes: kind, size and byte order), never by object identity:
// an array that went through pickle or np.dtype("float32") carries an equal dtype that is another object.
bool same_dtype(const py::dtype& a, const py::dtype& b) {
  return py::detail::npy_api::get().PyArray_EquivTypes_(a.ptr(), b.ptr());
}

// Raw pointer of an array that must have exactly dtype T, be C-contiguous and (for outputs) writable.
template <typename T>
T* ptr(const py::array& a, const char* op, const char* name, bool writable = false) {
  if (!same_dtype(a.dtype(), py::dtype::of<T>()))
    throw py::type_error(std::string(op) + ": " + name + " must have dtype " +
                         py::str(py::dtype::of<T>()).cast<std::string>() + ", got " + dtype_name(a));
  if (!(a.flags() & py::array::c_style))
    ck::fail(op, name, " must be C-contiguous (no silent copies are made), got strides that are not");
  // A C-contiguous view can still start at an address that is no multiple of the element size
  // (np.frombuffer(..., offset=1)); dereferencing it as T* is undefined behaviour, so refuse it.
  if (const auto addr = reinterpret_cast<std::uintptr_t>(a.data()); addr % alignof(T) != 0)
    ck::fail(op, name, " must be aligned to ", alignof(T), " bytes (", py::str(py::dtype::of<T>()).cast<std::string>(),
             "), got an address ", addr % alignof(T), " byte(s) past a multiple of ", alignof(T),
             " (no silent copies are made; pass a copy, e.g. numpy.array(", name, "))");
  if (writable && !a.writeable()) ck::fail(op, name, " must be writable, got a read-only array");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

void expect_shape(const char* op, const char* name, const py::array& a, const std::vector<int64_t>& want) {
  if (shape_of(a) != want)
    ck::fail(op, name, " must have shape ", ck::shape_str(want), ", got ", ck::shape_str(shape_of(a)));
}

enum class DType { f32, f64 };
DType float_dtype(const py::array& a, const char* op, const char* name) {
  if (same_dtype(a.dtype(), py::dtype::of<float>())) return DType::f32;
  if (same_dtype(a.dtype(), py::dtype::of<double>())) return DType::f64;
  throw py::type_error(std::string(op) + ": " + name + " must be float32 or float64, got " + dtype_name(a));
}

// ---- conv2d ----

std::vector<int64_t> conv2d_out_shape(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                                      Pair stride, Pair padding, Pair dilation, int64_t groups) {
  auto p = ck::make_conv2d_params("conv2d", x_shape, w_shape, stride[0], stride[1], padding[0], padding[1],
                                  dilation[0], dilation[1], groups);
  return {p.N, p.K, p.P, p.Q};
}

void conv2d_fwd(const py::array& x, const py::array& w, const py::object& b, const py::array& y, Pair stride,
                Pair padding, Pair dilation, int64_t groups) {
  const char* op = "conv2d_fwd";
  auto p = ck::make_conv2d_params(op, shape_of(x), shape_of(w), stride[0], stride[1], padding[0], padding[1],
                                  dilation[0], dilation[1], groups);
  expect_shape(op, "y", y, {p.N, p.K, p.P, p.Q});
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
    ck::conv2d_fwd_cpu<T>(p, xp, wp, bp, yp);
  };
  float_dtype(x, op, "x") == DType::f32 ? run(float{}) : run(double{});
}

void conv2d_bwd_data(const py::array& dy, const py::array& w, const py::array& dx, Pair stride, Pair padding,
                     Pair dilation, int64_t groups) {
  const char* op = "conv2d_bwd_data";
  auto p = ck::make_conv2d_params(op, shape_of(dx), shape_of(w), stride[0], stride[1], padding[0], padding[1],
                                  dilation[0], dilation[1], groups);
  expect_shape(op, "dy", dy, {p.N, p.K, p.P, p.Q});
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = ptr<T>(dy, op, "dy");
    const T* wp = ptr<T>(w, op, "w");
    T* dxp = ptr<T>(dx, op, "dx", true);
    py::gil_scoped_release nogil;
    ck::conv2d_bwd_data_cpu<T>(p, dyp, wp, dxp);
  };
  float_dtype(dy, op, "dy") == DType::f32 ? run(float{}) : run(double{});
}

void conv2d_bwd_weight(const py::array& dy, const py::array& x, const py::array& dw, Pair stride, Pair padding,
                       Pair dilation, int64_t groups, bool accumulate) {
  const char* op = "conv2d_bwd_weight";
  auto p = ck::make_conv2d_params(op, shape_of(x), shape_of(dw), stride[0], stride[1], padding[0], padding[1],
                                  dilation[0], dilation[1], groups);
  expect_shape(op, "dy", dy, {p.N, p.K, p.P, p.Q});
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = ptr<T>(dy, op, "dy");
    const T* xp = ptr<T>(x, op, "x");
    T* dwp = ptr<T>(dw, op, "dw", true);
    py::gil_scoped_release nogil;
    ck::conv2d_bwd_weight_cpu<T>(p, dyp, xp, dwp, accumulate);
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

// ---- maxpool2d ----

std::vector<int64_t> maxpool2d_out_shape(const std::vector<int64_t>& x_shape, Pair kernel, Pair stride,
                                         Pair padding, Pair dilation, bool ceil_mode) {
  auto p = ck::make_maxpool2d_params("maxpool2d_fwd", x_shape, kernel[0], kernel[1], stride[0], stride[1],
                                     padding[0], padding[1], dilation[0], dilation[1], ceil_mode);
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
    const int64_t planes = dx.shape(0) * dx.shape(1), HW = dx.shape(2) * dx.shape(3),
                  PQ = dy.shape(2) * dy.shape(3);
    py::gil_scoped_release nogil;
    ck::maxpool2d_bwd_cpu<T>(planes, HW, PQ, dyp, ip, dxp);
  };
  float_dtype(dy, op, "dy") == DType::f32 ? run(float{}) : run(double{});
}

// ---- dropout and relu ----

void same_size(const char* op, const char* a_name, const py::array& a, const char* b_name, const py::array& b) {
  if (shape_of(a) != shape_of(b))
    ck::fail(op, b_name, " must have the shape of ", a_name, " ", ck::shape_str(shape_of(a)), ", got ",
             ck::shape_str(shape_of(b)));
}

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

// ---- matmul ----

void matmul(const py::array& a, const py::array& b, const py::array& c, bool trans_a, bool trans_b, bool accumulate) {
  const char* op = "matmul";
  if (a.ndim() != 2 || b.ndim() != 2 || c.ndim() != 2)
    ck::fail(op, "a, b and out must be 2-D, got shapes ", ck::shape_str(shape_of(a)), ", ",
             ck::shape_str(shape_of(b)), ", ", ck::shape_str(shape_of(c)));
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

// ---- batchnorm ----

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

py::dict build_info() {
  py::dict d;
  d["version"] = CNNKIT_VERSION;
  d["cuda"] = ck::cuda_built();
  d["cuda_archs"] = ck::cuda_built() ? std::string(CNNKIT_CUDA_ARCHS) : std::string();
  d["blas"] = "scipy-openblas32 (" + ck::blas_config() + ")";
  d["openmp"] = ck::openmp_version();
  d["num_threads"] = ck::get_num_threads();
  d["simd"] = ck::simd_level();
  d["compiler"] = __VERSION__;
  return d;
}

py::tuple cuda_status() {
  std::string why;
  int n = ck::cuda_device_count(&why);
  return py::make_tuple(n, why);
}


// ==== data augmentation (cnnkit.data.transforms) ====
// aug_pipeline runs a list of stages over x (N, C, H, W) into a preallocated y in one kernel call. A stage
// is (kind, stream, a (6 floats), P, Q, eigval or None, eigvec or None); see ops/augment.h. ids (N,) int64 are
// the samples' dataset indices (the key of their Philox streams); records, if given, is (N, 16) float64.

struct AugStages {
  std::vector<ck::AugStage> stages;
  std::vector<py::array> keep;  // eigval/eigvec arrays stay referenced while the kernel runs
  int64_t P, Q;
};

// device: the lighting matrices are integer device pointers (aug_pipeline_cuda), else float64 numpy arrays.
AugStages aug_parse(const char* op, const py::list& items, int64_t C, int64_t H, int64_t W, bool device = false) {
  AugStages out;
  int64_t h = H, w = W;
  if (items.size() == 0) ck::fail(op, "stages must not be empty");
  for (const py::handle& item : items) {
    auto t = item.cast<py::tuple>();
    if (t.size() != 7) ck::fail(op, "each stage must be (kind, stream, a, P, Q, eigval, eigvec)");
    ck::AugStage st{};
    st.kind = t[0].cast<int>();
    st.stream = t[1].cast<uint32_t>();
    auto a = t[2].cast<std::vector<double>>();
    if (a.size() != 6) ck::fail(op, "stage parameters must have 6 entries, got ", a.size());
    std::copy(a.begin(), a.end(), st.a);
    st.P = t[3].cast<int64_t>();
    st.Q = t[4].cast<int64_t>();
    switch (st.kind) {
      case ck::kHFlip:
        if (!(st.a[0] >= 0.0 && st.a[0] <= 1.0)) ck::fail(op, "flip p must be in [0, 1], got ", st.a[0]);
        break;
      case ck::kCrop: {
        const int64_t pad = static_cast<int64_t>(st.a[0]);
        if (pad < 0 || static_cast<double>(pad) != st.a[0]) ck::fail(op, "crop padding must be an int >= 0");
        if (st.P < 1 || st.Q < 1 || st.P > h + 2 * pad || st.Q > w + 2 * pad)
          ck::fail(op, "crop size (", st.P, ", ", st.Q, ") must fit in the padded image (", h + 2 * pad, ", ",
                   w + 2 * pad, ")");
        break;
      }
      case ck::kResizedCrop:
        if (st.P < 1 || st.Q < 1) ck::fail(op, "resized crop size must be >= 1");
        if (!(st.a[0] > 0 && st.a[0] <= st.a[1])) ck::fail(op, "scale must satisfy 0 < lo <= hi");
        if (!(st.a[2] > 0 && st.a[2] <= st.a[3])) ck::fail(op, "ratio must satisfy 0 < lo <= hi");
        break;
      case ck::kJitter:
        if (!(st.a[0] >= 0 && st.a[1] >= 0 && st.a[2] >= 0)) ck::fail(op, "jitter strengths must be >= 0");
        if (st.a[1] > 0 && C != 1 && C != 3) ck::fail(op, "contrast needs C == 1 or 3, got C = ", C);
        if (st.a[2] > 0 && C != 3) ck::fail(op, "saturation needs C == 3, got C = ", C);
        break;
      case ck::kLighting: {
        if (C > ck::kAugRecord) ck::fail(op, "lighting supports C <= ", ck::kAugRecord, ", got C = ", C);
        if (device) {  // shapes were checked on the CuPy arrays by cnnkit/_cuda_ops.py
          const auto ev = t[5].cast<std::uintptr_t>(), vec = t[6].cast<std::uintptr_t>();
          if (ev == 0 || vec == 0) ck::fail(op, "lighting eigval and eigvec must be non-null device pointers");
          st.eigval = reinterpret_cast<const double*>(ev);
          st.eigvec = reinterpret_cast<const double*>(vec);
          break;
        }
        py::array ev = t[5].cast<py::array>(), vec = t[6].cast<py::array>();
        expect_shape(op, "eigval", ev, {C});
        expect_shape(op, "eigvec", vec, {C, C});
        st.eigval = ptr<double>(ev, op, "eigval");
        st.eigvec = ptr<double>(vec, op, "eigvec");
        out.keep.push_back(ev);
        out.keep.push_back(vec);
        break;
      }
      case ck::kAffine:
        if (!(st.a[3] > 0 && st.a[3] <= st.a[4])) ck::fail(op, "affine scale must satisfy 0 < lo <= hi");
        break;
      default:
        ck::fail(op, "unknown stage kind ", st.kind);
    }
    if (st.kind != ck::kCrop && st.kind != ck::kResizedCrop && (st.P != h || st.Q != w))
      ck::fail(op, "stage kind ", st.kind, " keeps the plane size (", h, ", ", w, "), got (", st.P, ", ", st.Q, ")");
    h = st.P;
    w = st.Q;
    out.stages.push_back(st);
  }
  out.P = h;
  out.Q = w;
  return out;
}

void aug_pipeline(const py::array& x, const py::array& y, const py::array& ids, const py::list& stages,
                  uint64_t seed, uint32_t epoch, int num_threads, const py::object& records) {
  const char* op = "augment";
  if (x.ndim() != 4) ck::fail(op, "x must be 4-D (N, C, H, W), got shape ", ck::shape_str(shape_of(x)));
  const int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  expect_shape(op, "ids", ids, {N});
  AugStages st = aug_parse(op, stages, C, H, W);
  expect_shape(op, "y", y, {N, C, st.P, st.Q});
  if (!same_dtype(x.dtype(), y.dtype())) throw py::type_error(std::string(op) + ": y must have the dtype of x");
  double* rp = nullptr;
  if (!records.is_none()) {
    py::array r = records.cast<py::array>();
    expect_shape(op, "records", r, {N, ck::kAugRecord});
    rp = ptr<double>(r, op, "records", true);
  }
  const ck::AugKey key{seed, epoch, ptr<int64_t>(ids, op, "ids"), num_threads};
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = ptr<T>(x, op, "x");
    T* yp = ptr<T>(y, op, "y", true);
    py::gil_scoped_release nogil;
    ck::augment_pipeline_cpu<T>(N, C, H, W, xp, st.stages.data(), static_cast<int>(st.stages.size()), key, yp, rp);
  };
  float_dtype(x, op, "x") == DType::f32 ? run(float{}) : run(double{});
}

void philox_keys(const py::array& keys, uint64_t seed, uint32_t epoch, uint32_t stream) {
  const char* op = "philox_keys";
  if (keys.ndim() != 1) ck::fail(op, "keys must be 1-D");
  uint64_t* kp = ptr<uint64_t>(keys, op, "keys", true);
  const int64_t n = keys.shape(0);
  py::gil_scoped_release nogil;
  ck::philox_keys_cpu(n, seed, epoch, stream, kp);
}
// ==== end of data augmentation ====

}  // namespace

// ==== optimizers (csrc/ops/optim.h): fused steps over flat, C-contiguous buffers, updated in place ====
#include "ops/optim.h"

namespace {

// The flat buffer `a` of n elements (any shape; the optimizer passes 1-D views), dtype T, writable if asked.
template <typename T>
T* flat(const py::array& a, const char* op, const char* name, int64_t n, bool writable) {
  T* q = ptr<T>(a, op, name, writable);
  if (static_cast<int64_t>(a.size()) != n) ck::fail(op, name, " must have ", n, " elements (as g), got ", a.size());
  return q;
}

template <typename T>
T* flat_or_null(const py::object& a, const char* op, const char* name, int64_t n) {
  return a.is_none() ? nullptr : flat<T>(a.cast<py::array>(), op, name, n, true);
}

template <typename T>
ck::GradPrep<T> grad_prep(double gscale, double gclip, double wd, double l1) {
  return {T(gscale), T(gclip), T(wd), T(l1)};
}

void sgd_step(const py::array& p, const py::array& g, const py::object& buf, double neg_lr, double momentum,
              double one_minus_dampening, bool nesterov, bool first, double gscale, double gclip, double wd,
              double l1) {
  const char* op = "sgd_step";
  if (momentum != 0.0 && buf.is_none()) ck::fail(op, "momentum_buffer is required when momentum != 0");
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = g.size();
    const T* gp = flat<T>(g, op, "g", n, false);
    T* pp = flat<T>(p, op, "p", n, true);
    T* bp = flat_or_null<T>(buf, op, "momentum_buffer", n);
    const ck::SgdArgs a{neg_lr, momentum, one_minus_dampening, nesterov, first};
    const auto c = grad_prep<T>(gscale, gclip, wd, l1);
    py::gil_scoped_release nogil;
    ck::sgd_step_cpu<T>(n, pp, gp, bp, a, c);
  };
  float_dtype(g, op, "g") == DType::f32 ? run(float{}) : run(double{});
}

void adagrad_step(const py::array& p, const py::array& g, const py::array& sum, double neg_clr, double eps,
                  double gscale, double gclip, double wd, double l1) {
  const char* op = "adagrad_step";
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = g.size();
    const T* gp = flat<T>(g, op, "g", n, false);
    T* pp = flat<T>(p, op, "p", n, true);
    T* sp = flat<T>(sum, op, "sum", n, true);
    const ck::AdagradArgs a{neg_clr, eps};
    const auto c = grad_prep<T>(gscale, gclip, wd, l1);
    py::gil_scoped_release nogil;
    ck::adagrad_step_cpu<T>(n, pp, gp, sp, a, c);
  };
  float_dtype(g, op, "g") == DType::f32 ? run(float{}) : run(double{});
}

void rmsprop_step(const py::array& p, const py::array& g, const py::array& square_avg, const py::object& grad_avg,
                  const py::object& buf, double neg_lr, double alpha, double eps, double momentum, double gscale,
                  double gclip, double wd, double l1) {
  const char* op = "rmsprop_step";
  if (momentum > 0.0 && buf.is_none()) ck::fail(op, "momentum_buffer is required when momentum > 0");
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = g.size();
    const T* gp = flat<T>(g, op, "g", n, false);
    T* pp = flat<T>(p, op, "p", n, true);
    T* sq = flat<T>(square_avg, op, "square_avg", n, true);
    T* ga = flat_or_null<T>(grad_avg, op, "grad_avg", n);
    T* bp = momentum > 0.0 ? flat_or_null<T>(buf, op, "momentum_buffer", n) : nullptr;
    const ck::RmspropArgs a{neg_lr, alpha, eps, momentum};
    const auto c = grad_prep<T>(gscale, gclip, wd, l1);
    py::gil_scoped_release nogil;
    ck::rmsprop_step_cpu<T>(n, pp, gp, sq, ga, bp, a, c);
  };
  float_dtype(g, op, "g") == DType::f32 ? run(float{}) : run(double{});
}

void adam_step(const py::array& p, const py::array& g, const py::array& exp_avg, const py::array& exp_avg_sq,
               const py::object& max_exp_avg_sq, double beta1, double beta2, double eps, double neg_step_size,
               double bc2_sqrt, double decay, double gscale, double gclip, double wd, double l1) {
  const char* op = "adam_step";
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = g.size();
    const T* gp = flat<T>(g, op, "g", n, false);
    T* pp = flat<T>(p, op, "p", n, true);
    T* m = flat<T>(exp_avg, op, "exp_avg", n, true);
    T* v = flat<T>(exp_avg_sq, op, "exp_avg_sq", n, true);
    T* vmax = flat_or_null<T>(max_exp_avg_sq, op, "max_exp_avg_sq", n);
    const ck::AdamArgs a{beta1, beta2, eps, neg_step_size, bc2_sqrt, decay};
    const auto c = grad_prep<T>(gscale, gclip, wd, l1);
    py::gil_scoped_release nogil;
    ck::adam_step_cpu<T>(n, pp, gp, m, v, vmax, a, c);
  };
  float_dtype(g, op, "g") == DType::f32 ? run(float{}) : run(double{});
}

py::tuple grad_sumsq(const py::array& g) {
  const char* op = "grad_sumsq";
  bool finite = true;
  double s = 0.0;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* gp = ptr<T>(g, op, "g");
    const int64_t n = g.size();
    py::gil_scoped_release nogil;
    s = ck::grad_sumsq_cpu<T>(n, gp, &finite);
  };
  float_dtype(g, op, "g") == DType::f32 ? run(float{}) : run(double{});
  return py::make_tuple(s, finite);
}

void grad_scale_clamp(const py::array& g, double scale, double clip) {
  const char* op = "grad_scale_clamp";
  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* gp = ptr<T>(g, op, "g", true);
    const int64_t n = g.size();
    py::gil_scoped_release nogil;
    ck::grad_scale_clamp_cpu<T>(n, gp, scale, clip);
  };
  float_dtype(g, op, "g") == DType::f32 ? run(float{}) : run(double{});
}

// The per-step scalars (optim.h's one home of the formulas), for the CPU path's host-side computation.
py::tuple adam_scalars(double lr, double beta1, double beta2, double step) {
  double neg_step_size = 0.0, bc2_sqrt = 0.0;
  ck::adam_scalars(lr, beta1, beta2, step, &neg_step_size, &bc2_sqrt);
  return py::make_tuple(neg_step_size, bc2_sqrt);
}

void maxnorm_rows(const py::array& p, double max_norm) {
  const char* op = "maxnorm_rows";
  if (p.ndim() < 1) ck::fail(op, "p must have at least 1 dimension, got a scalar");
  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* pp = ptr<T>(p, op, "p", true);
    const int64_t rows = p.shape(0), cols = rows ? p.size() / rows : 0;
    py::gil_scoped_release nogil;
    ck::maxnorm_rows_cpu<T>(rows, cols, pp, max_norm);
  };
  float_dtype(p, op, "p") == DType::f32 ? run(float{}) : run(double{});
}

}  // namespace

// ==== end of optimizer bindings ====

// ==== CUDA entry points (compiled only with CNNKIT_WITH_CUDA) ====
// The Python side (cnnkit/_cuda_ops.py) validates CuPy arrays and passes integers: device pointers from
// __cuda_array_interface__, shapes, a dtype code (0 = float32, 1 = float64) and CuPy's current stream. These
// functions re-validate the shapes with the same make_*_params as the CPU path and never touch device memory
// on the host; the kernels are queued on that stream and nothing is synchronised.
#if defined(CNNKIT_WITH_CUDA)
namespace {

using Shape = std::vector<int64_t>;

template <typename T>
T* dptr(std::uintptr_t a) { return reinterpret_cast<T*>(a); }

CUstream_st* as_stream(std::uintptr_t s) { return reinterpret_cast<CUstream_st*>(s); }

void nonneg(const char* op, int64_t n) {
  if (n < 0) ck::fail(op, "n must be >= 0, got ", n);
}

void nonnull(const char* op, const char* name, std::uintptr_t a, int64_t n) {
  if (a == 0 && n > 0) ck::fail(op, name, " is a null device pointer for ", n, " elements");
}

// Runs f(float{}) or f(double{}) for dtype code 0 or 1, with the GIL released (no Python object is used).
template <typename F>
void by_dtype(const char* op, int dtype, F&& f) {
  if (dtype != 0 && dtype != 1) ck::fail(op, "dtype code must be 0 (float32) or 1 (float64), got ", dtype);
  py::gil_scoped_release nogil;
  dtype == 0 ? f(float{}) : f(double{});
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

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
    ck::conv2d_bwd_weight_cuda<T>(p, dptr<const T>(dy), dptr<const T>(x), dptr<T>(dw), accumulate,
                                  as_stream(stream), tf32);
  });
}

void cu_conv2d_bwd_bias(std::uintptr_t dy, std::uintptr_t db, const Shape& dy_shape, bool accumulate, int dtype,
                        std::uintptr_t stream) {
  const char* op = "conv2d_bwd_bias";
  if (dy_shape.size() != 4) ck::fail(op, "dy must be 4-D (N, K, P, Q), got shape ", ck::shape_str(dy_shape));
  for (int64_t d : dy_shape) if (d < 0) ck::fail(op, "dy shape must be non-negative, got ", ck::shape_str(dy_shape));
  nonnull(op, "dy", dy, numel(dy_shape));
  nonnull(op, "db", db, dy_shape[1]);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::conv2d_bwd_bias_cuda<T>(dy_shape[0], dy_shape[1], dy_shape[2] * dy_shape[3], dptr<const T>(dy), dptr<T>(db),
                                accumulate, as_stream(stream));
  });
}

void cu_maxpool2d_fwd(std::uintptr_t x, std::uintptr_t y, std::uintptr_t indices, const Shape& x_shape, Pair kernel,
                      Pair stride, Pair padding, Pair dilation, bool ceil_mode, int dtype, std::uintptr_t stream) {
  const char* op = "maxpool2d_fwd";
  auto p = ck::make_maxpool2d_params(op, x_shape, kernel[0], kernel[1], stride[0], stride[1], padding[0],
                                     padding[1], dilation[0], dilation[1], ceil_mode);
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
  for (int64_t d : dy_shape) if (d < 0) ck::fail(op, "dy shape must be non-negative, got ", ck::shape_str(dy_shape));
  for (int64_t d : x_shape) if (d < 0) ck::fail(op, "x_shape must be non-negative, got ", ck::shape_str(x_shape));
  if (dy_shape[0] != x_shape[0] || dy_shape[1] != x_shape[1])
    ck::fail(op, "dy and x_shape must agree in (N, C), got ", ck::shape_str(dy_shape), " and ",
             ck::shape_str(x_shape));
  nonnull(op, "dy", dy, numel(dy_shape));
  nonnull(op, "indices", indices, numel(dy_shape));
  nonnull(op, "dx", dx, numel(x_shape));
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::maxpool2d_bwd_cuda<T>(x_shape[0] * x_shape[1], x_shape[2] * x_shape[3], dy_shape[2] * dy_shape[3],
                              dptr<const T>(dy), dptr<const int64_t>(indices), dptr<T>(dx), as_stream(stream));
  });
}

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

void cu_relu_bwd(std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, int64_t n, int dtype,
                 std::uintptr_t stream) {
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

// ---- optimizers: flat buffers of n elements; a 0 pointer is "absent" where the CPU binding takes None ----
// ctl, group, clip_norm: the optimizer's device control block (ck::OptimCtl; ctl = 0: none, host scalars).

ck::OptimCtl optim_ctl(const char* op, std::uintptr_t ctl, int64_t group, double clip_norm) {
  if (ctl == 0) return {};
  if (group < 0) ck::fail(op, "group must be >= 0, got ", group);
  return ck::OptimCtl{dptr<const double>(ctl), group, clip_norm};
}

void cu_sgd_step(std::uintptr_t p, std::uintptr_t g, std::uintptr_t buf, int64_t n, double neg_lr, double momentum,
                 double one_minus_dampening, bool nesterov, bool first, double gscale, double gclip, double wd,
                 double l1, int dtype, std::uintptr_t stream, std::uintptr_t ctl, int64_t group, double clip_norm) {
  const char* op = "sgd_step";
  nonneg(op, n);
  if (momentum != 0.0 && buf == 0) ck::fail(op, "momentum_buffer is required when momentum != 0");
  nonnull(op, "p", p, n);
  nonnull(op, "g", g, n);
  const auto k = optim_ctl(op, ctl, group, clip_norm);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    const ck::SgdArgs a{neg_lr, momentum, one_minus_dampening, nesterov, first};
    ck::sgd_step_cuda<T>(n, dptr<T>(p), dptr<const T>(g), buf ? dptr<T>(buf) : nullptr, a,
                         grad_prep<T>(gscale, gclip, wd, l1), as_stream(stream), k);
  });
}

void cu_adagrad_step(std::uintptr_t p, std::uintptr_t g, std::uintptr_t sum, int64_t n, double neg_clr, double eps,
                     double gscale, double gclip, double wd, double l1, int dtype, std::uintptr_t stream,
                     std::uintptr_t ctl, int64_t group, double clip_norm, double lr_decay) {
  const char* op = "adagrad_step";
  nonneg(op, n);
  nonnull(op, "p", p, n);
  nonnull(op, "g", g, n);
  nonnull(op, "sum", sum, n);
  const auto k = optim_ctl(op, ctl, group, clip_norm);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::adagrad_step_cuda<T>(n, dptr<T>(p), dptr<const T>(g), dptr<T>(sum), ck::AdagradArgs{neg_clr, eps, lr_decay},
                             grad_prep<T>(gscale, gclip, wd, l1), as_stream(stream), k);
  });
}

void cu_rmsprop_step(std::uintptr_t p, std::uintptr_t g, std::uintptr_t square_avg, std::uintptr_t grad_avg,
                     std::uintptr_t buf, int64_t n, double neg_lr, double alpha, double eps, double momentum,
                     double gscale, double gclip, double wd, double l1, int dtype, std::uintptr_t stream,
                     std::uintptr_t ctl, int64_t group, double clip_norm) {
  const char* op = "rmsprop_step";
  nonneg(op, n);
  if (momentum > 0.0 && buf == 0) ck::fail(op, "momentum_buffer is required when momentum > 0");
  nonnull(op, "p", p, n);
  nonnull(op, "g", g, n);
  nonnull(op, "square_avg", square_avg, n);
  const auto k = optim_ctl(op, ctl, group, clip_norm);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::rmsprop_step_cuda<T>(n, dptr<T>(p), dptr<const T>(g), dptr<T>(square_avg),
                             grad_avg ? dptr<T>(grad_avg) : nullptr, momentum > 0.0 ? dptr<T>(buf) : nullptr,
                             ck::RmspropArgs{neg_lr, alpha, eps, momentum}, grad_prep<T>(gscale, gclip, wd, l1),
                             as_stream(stream), k);
  });
}

void cu_adam_step(std::uintptr_t p, std::uintptr_t g, std::uintptr_t exp_avg, std::uintptr_t exp_avg_sq,
                  std::uintptr_t max_exp_avg_sq, int64_t n, double beta1, double beta2, double eps,
                  double neg_step_size, double bc2_sqrt, double decay, double gscale, double gclip, double wd,
                  double l1, int dtype, std::uintptr_t stream, std::uintptr_t ctl, int64_t group, double clip_norm) {
  const char* op = "adam_step";
  nonneg(op, n);
  nonnull(op, "p", p, n);
  nonnull(op, "g", g, n);
  nonnull(op, "exp_avg", exp_avg, n);
  nonnull(op, "exp_avg_sq", exp_avg_sq, n);
  const auto k = optim_ctl(op, ctl, group, clip_norm);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::adam_step_cuda<T>(n, dptr<T>(p), dptr<const T>(g), dptr<T>(exp_avg), dptr<T>(exp_avg_sq),
                          max_exp_avg_sq ? dptr<T>(max_exp_avg_sq) : nullptr,
                          ck::AdamArgs{beta1, beta2, eps, neg_step_size, bc2_sqrt, decay},
                          grad_prep<T>(gscale, gclip, wd, l1), as_stream(stream), k);
  });
}

void cu_grad_sumsq(std::uintptr_t g, int64_t n, std::uintptr_t workspace, std::uintptr_t out, int dtype,
                   std::uintptr_t stream, bool accumulate) {
  const char* op = "grad_sumsq";
  nonneg(op, n);
  nonnull(op, "g", g, n);
  nonnull(op, "workspace", workspace, 1);
  nonnull(op, "out", out, 2);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::grad_sumsq_cuda<T>(n, dptr<const T>(g), dptr<double>(workspace), dptr<double>(out), as_stream(stream),
                           accumulate);
  });
}

void cu_grad_scale_clamp(std::uintptr_t g, int64_t n, double scale, double clip, int dtype, std::uintptr_t stream,
                         std::uintptr_t ctl, double clip_norm) {
  const char* op = "grad_scale_clamp";
  nonneg(op, n);
  nonnull(op, "g", g, n);
  const auto k = optim_ctl(op, ctl, 0, clip_norm);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::grad_scale_clamp_cuda<T>(n, dptr<T>(g), scale, clip, as_stream(stream), k);
  });
}

void cu_maxnorm_rows(std::uintptr_t p, int64_t rows, int64_t cols, double max_norm, int dtype, std::uintptr_t stream,
                     std::uintptr_t ctl) {
  const char* op = "maxnorm_rows";
  if (rows < 0 || cols < 0) ck::fail(op, "rows and cols must be >= 0, got ", rows, " and ", cols);
  nonnull(op, "p", p, rows * cols);
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::maxnorm_rows_cuda<T>(rows, cols, dptr<T>(p), max_norm, as_stream(stream),
                             ctl ? dptr<const double>(ctl) : nullptr);
  });
}

void cu_optim_ctl_finish(std::uintptr_t ctl, int64_t groups, std::uintptr_t stream) {
  const char* op = "optim_ctl_finish";
  if (groups < 0) ck::fail(op, "groups must be >= 0, got ", groups);
  nonnull(op, "ctl", ctl, ck::ctl_size(groups));
  ck::optim_ctl_finish_cuda(dptr<double>(ctl), groups, as_stream(stream));
}

}  // namespace
#endif  // CNNKIT_WITH_CUDA
// ==== end of CUDA entry points ====

// ==== data augmentation on the GPU (ops/augment.cu) ====
// As aug_pipeline, with integer device pointers (x, y, ids (N,) int64, records (N, 16) float64 or 0) and
// x_shape; a lighting stage's eigval/eigvec are device pointers too. Shapes and stage parameters are checked by
// the CPU path's aug_parse; the kernels are queued on `stream`, nothing is synchronised.
#if defined(CNNKIT_WITH_CUDA)
namespace {

void cu_aug_pipeline(std::uintptr_t x, std::uintptr_t y, std::uintptr_t ids, const Shape& x_shape,
                     const py::list& stages, uint64_t seed, uint32_t epoch, std::uintptr_t records, int dtype,
                     std::uintptr_t stream) {
  const char* op = "augment";
  if (x_shape.size() != 4) ck::fail(op, "x must be 4-D (N, C, H, W), got shape ", ck::shape_str(x_shape));
  for (int64_t d : x_shape)
    if (d < 0) ck::fail(op, "x_shape must be non-negative, got ", ck::shape_str(x_shape));
  const int64_t N = x_shape[0], C = x_shape[1], H = x_shape[2], W = x_shape[3];
  AugStages st = aug_parse(op, stages, C, H, W, true);
  nonnull(op, "x", x, numel(x_shape));
  nonnull(op, "y", y, N * C * st.P * st.Q);
  nonnull(op, "ids", ids, N);
  const ck::AugKey key{seed, epoch, dptr<const int64_t>(ids), 0};
  by_dtype(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    ck::augment_pipeline_cuda<T>(N, C, H, W, dptr<const T>(x), st.stages.data(), static_cast<int>(st.stages.size()),
                                 key, dptr<T>(y), records ? dptr<double>(records) : nullptr, as_stream(stream));
  });
}

}  // namespace
#endif  // CNNKIT_WITH_CUDA
// ==== end of data augmentation on the GPU ====


PYBIND11_MODULE(_C, m) {
  m.doc() = "cnnkit kernels (raw; use cnnkit.ops, which validates arguments first)";
  ck::runtime_init();
  m.def("conv2d_out_shape", &conv2d_out_shape, py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"));
  m.def("conv2d_fwd", &conv2d_fwd, py::arg("x"), py::arg("w"), py::arg("b").none(true), py::arg("y"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"));
  m.def("conv2d_bwd_data", &conv2d_bwd_data, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"));
  m.def("conv2d_bwd_weight", &conv2d_bwd_weight, py::arg("dy"), py::arg("x"), py::arg("dw"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("accumulate"));
  m.def("conv2d_bwd_bias", &conv2d_bwd_bias, py::arg("dy"), py::arg("db"), py::arg("accumulate"));
  m.def("maxpool2d_out_shape", &maxpool2d_out_shape, py::arg("x_shape"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"));
  m.def("maxpool2d_fwd", &maxpool2d_fwd, py::arg("x"), py::arg("y"), py::arg("indices"), py::arg("kernel"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"));
  m.def("maxpool2d_bwd", &maxpool2d_bwd, py::arg("dy"), py::arg("indices"), py::arg("dx"));
  m.def("dropout_fwd", &dropout_fwd, py::arg("x"), py::arg("y"), py::arg("mask"), py::arg("p"), py::arg("seed"),
        py::arg("offset"));
  m.def("dropout_bwd", &dropout_bwd, py::arg("dy"), py::arg("mask"), py::arg("dx"), py::arg("p"));
  m.def("relu_fwd", &relu_fwd, py::arg("x"), py::arg("y"));
  m.def("relu_bwd", &relu_bwd, py::arg("dy"), py::arg("y"), py::arg("dx"));
  m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a"), py::arg("trans_b"),
        py::arg("accumulate"));
  m.def("batchnorm_stats", &batchnorm_stats, py::arg("x"), py::arg("mean"), py::arg("var"));
  m.def("channel_affine", &channel_affine, py::arg("x"), py::arg("alpha"), py::arg("beta"), py::arg("y"));
  m.def("batchnorm_bwd", &batchnorm_bwd, py::arg("dy"), py::arg("x"), py::arg("mean"), py::arg("invstd"),
        py::arg("weight").none(true), py::arg("train"), py::arg("dx").none(true), py::arg("sum_dy"), py::arg("dotp"));
  m.def("set_num_threads", &ck::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &ck::get_num_threads);
  m.def("build_info", &build_info);
  m.def("cuda_status", &cuda_status, "(device_count, reason) from the CUDA runtime; never throws");
  // ---- optimizers (ops/optim.h) ----
  m.def("sgd_step", &sgd_step, py::arg("p"), py::arg("g"), py::arg("momentum_buffer").none(true),
        py::arg("neg_lr"), py::arg("momentum"), py::arg("one_minus_dampening"), py::arg("nesterov"),
        py::arg("first"), py::arg("gscale"), py::arg("gclip"), py::arg("wd"), py::arg("l1"));
  m.def("adagrad_step", &adagrad_step, py::arg("p"), py::arg("g"), py::arg("sum"), py::arg("neg_clr"),
        py::arg("eps"), py::arg("gscale"), py::arg("gclip"), py::arg("wd"), py::arg("l1"));
  m.def("rmsprop_step", &rmsprop_step, py::arg("p"), py::arg("g"), py::arg("square_avg"),
        py::arg("grad_avg").none(true), py::arg("momentum_buffer").none(true), py::arg("neg_lr"),
        py::arg("alpha"), py::arg("eps"), py::arg("momentum"), py::arg("gscale"), py::arg("gclip"),
        py::arg("wd"), py::arg("l1"));
  m.def("adam_step", &adam_step, py::arg("p"), py::arg("g"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
        py::arg("max_exp_avg_sq").none(true), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("neg_step_size"), py::arg("bc2_sqrt"), py::arg("decay"), py::arg("gscale"), py::arg("gclip"),
        py::arg("wd"), py::arg("l1"));
  m.def("grad_sumsq", &grad_sumsq, py::arg("g"), "(sum of g**2 in float64, all finite) in one pass");
  m.def("grad_scale_clamp", &grad_scale_clamp, py::arg("g"), py::arg("scale"), py::arg("clip"));
  m.def("maxnorm_rows", &maxnorm_rows, py::arg("p"), py::arg("max_norm"));
  m.def("adam_scalars", &adam_scalars, py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("step"),
        "(neg_step_size, bc2_sqrt) of Adam step `step` (1-based), as torch computes them");
  m.def("adagrad_clr", &ck::adagrad_clr, py::arg("lr"), py::arg("lr_decay"), py::arg("step"),
        "AdaGrad's decayed lr at step `step` (1-based)");
  m.def("clip_coef", &ck::clip_coef, py::arg("max_norm"), py::arg("sumsq"),
        "clip_grad_norm_'s coefficient min(max_norm / (sqrt(sumsq) + 1e-6), 1)");
  {
    py::dict layout;  // the optimizer's device control block (optim.h, OptimCtl)
    layout["sumsq"] = ck::kCtlSumsq;
    layout["finite"] = ck::kCtlFinite;
    layout["skipped"] = ck::kCtlSkipped;
    layout["group0"] = ck::kCtlGroup0;
    layout["per_group"] = ck::kCtlPerGroup;
    m.attr("optim_ctl_layout") = layout;
  }
  // ---- data augmentation ----
  m.def("aug_pipeline", &aug_pipeline, py::arg("x"), py::arg("y"), py::arg("ids"), py::arg("stages"),
        py::arg("seed"), py::arg("epoch"), py::arg("num_threads"), py::arg("records").none(true));
  m.def("philox_keys", &philox_keys, py::arg("keys"), py::arg("seed"), py::arg("epoch"), py::arg("stream"));
#if defined(CNNKIT_WITH_CUDA)
  m.def("aug_pipeline_cuda", &cu_aug_pipeline, py::arg("x"), py::arg("y"), py::arg("ids"), py::arg("x_shape"),
        py::arg("stages"), py::arg("seed"), py::arg("epoch"), py::arg("records"), py::arg("dtype"), py::arg("stream"));
#endif
#if defined(CNNKIT_WITH_CUDA)
  // ---- CUDA entry points: integer device pointers, dtype code, CuPy stream; see cnnkit/_cuda_ops.py ----
  // tf32 (conv2d, float32 only, default off; cnnkit.cuda.get_tf32()): tensor cores with TF32-rounded operands.
  m.def("conv2d_fwd_cuda", &cu_conv2d_fwd, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"), py::arg("x_shape"),
        py::arg("w_shape"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("dtype"), py::arg("stream"), py::arg("tf32") = false);
  m.def("conv2d_bwd_data_cuda", &cu_conv2d_bwd_data, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("x_shape"),
        py::arg("w_shape"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("dtype"), py::arg("stream"), py::arg("tf32") = false);
  m.def("conv2d_bwd_weight_cuda", &cu_conv2d_bwd_weight, py::arg("dy"), py::arg("x"), py::arg("dw"),
        py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("groups"), py::arg("accumulate"), py::arg("dtype"), py::arg("stream"), py::arg("tf32") = false);
  m.def("conv2d_bwd_bias_cuda", &cu_conv2d_bwd_bias, py::arg("dy"), py::arg("db"), py::arg("dy_shape"),
        py::arg("accumulate"), py::arg("dtype"), py::arg("stream"));
  m.def("maxpool2d_fwd_cuda", &cu_maxpool2d_fwd, py::arg("x"), py::arg("y"), py::arg("indices"), py::arg("x_shape"),
        py::arg("kernel"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"),
        py::arg("dtype"), py::arg("stream"));
  m.def("maxpool2d_bwd_cuda", &cu_maxpool2d_bwd, py::arg("dy"), py::arg("indices"), py::arg("dx"),
        py::arg("dy_shape"), py::arg("x_shape"), py::arg("dtype"), py::arg("stream"));
  m.def("dropout_fwd_cuda", &cu_dropout_fwd, py::arg("x"), py::arg("y"), py::arg("mask"), py::arg("n"), py::arg("p"),
        py::arg("seed"), py::arg("offset"), py::arg("dtype"), py::arg("stream"));
  m.def("dropout_bwd_cuda", &cu_dropout_bwd, py::arg("dy"), py::arg("mask"), py::arg("dx"), py::arg("n"),
        py::arg("p"), py::arg("dtype"), py::arg("stream"));
  m.def("relu_fwd_cuda", &cu_relu_fwd, py::arg("x"), py::arg("y"), py::arg("n"), py::arg("dtype"), py::arg("stream"));
  m.def("relu_bwd_cuda", &cu_relu_bwd, py::arg("dy"), py::arg("y"), py::arg("dx"), py::arg("n"), py::arg("dtype"),
        py::arg("stream"));
  m.def("sgd_step_cuda", &cu_sgd_step, py::arg("p"), py::arg("g"), py::arg("momentum_buffer"), py::arg("n"),
        py::arg("neg_lr"), py::arg("momentum"), py::arg("one_minus_dampening"), py::arg("nesterov"), py::arg("first"),
        py::arg("gscale"), py::arg("gclip"), py::arg("wd"), py::arg("l1"), py::arg("dtype"), py::arg("stream"),
        py::arg("ctl") = 0, py::arg("group") = 0, py::arg("clip_norm") = 0.0);
  m.def("adagrad_step_cuda", &cu_adagrad_step, py::arg("p"), py::arg("g"), py::arg("sum"), py::arg("n"),
        py::arg("neg_clr"), py::arg("eps"), py::arg("gscale"), py::arg("gclip"), py::arg("wd"), py::arg("l1"),
        py::arg("dtype"), py::arg("stream"), py::arg("ctl") = 0, py::arg("group") = 0, py::arg("clip_norm") = 0.0,
        py::arg("lr_decay") = 0.0);
  m.def("rmsprop_step_cuda", &cu_rmsprop_step, py::arg("p"), py::arg("g"), py::arg("square_avg"), py::arg("grad_avg"),
        py::arg("momentum_buffer"), py::arg("n"), py::arg("neg_lr"), py::arg("alpha"), py::arg("eps"),
        py::arg("momentum"), py::arg("gscale"), py::arg("gclip"), py::arg("wd"), py::arg("l1"), py::arg("dtype"),
        py::arg("stream"), py::arg("ctl") = 0, py::arg("group") = 0, py::arg("clip_norm") = 0.0);
  m.def("adam_step_cuda", &cu_adam_step, py::arg("p"), py::arg("g"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
        py::arg("max_exp_avg_sq"), py::arg("n"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("neg_step_size"), py::arg("bc2_sqrt"), py::arg("decay"), py::arg("gscale"), py::arg("gclip"),
        py::arg("wd"), py::arg("l1"), py::arg("dtype"), py::arg("stream"), py::arg("ctl") = 0, py::arg("group") = 0,
        py::arg("clip_norm") = 0.0);
  m.def("grad_sumsq_workspace_cuda", &ck::grad_sumsq_workspace_cuda, "float64 elements of scratch grad_sumsq_cuda needs");
  m.def("grad_sumsq_cuda", &cu_grad_sumsq, py::arg("g"), py::arg("n"), py::arg("workspace"), py::arg("out"),
        py::arg("dtype"), py::arg("stream"), py::arg("accumulate") = false,
        "writes (sum of g**2, 1.0 if all finite else 0.0) into out (2 float64); accumulate: adds to them");
  m.def("grad_scale_clamp_cuda", &cu_grad_scale_clamp, py::arg("g"), py::arg("n"), py::arg("scale"), py::arg("clip"),
        py::arg("dtype"), py::arg("stream"), py::arg("ctl") = 0, py::arg("clip_norm") = 0.0);
  m.def("maxnorm_rows_cuda", &cu_maxnorm_rows, py::arg("p"), py::arg("rows"), py::arg("cols"), py::arg("max_norm"),
        py::arg("dtype"), py::arg("stream"), py::arg("ctl") = 0);
  m.def("optim_ctl_finish_cuda", &cu_optim_ctl_finish, py::arg("ctl"), py::arg("groups"), py::arg("stream"),
        "advance the control block's counters once, after every group's step kernels");
#endif
  m.def("_threads_in_region", &ck::threads_in_region,
        "private test probe: omp_get_num_threads() inside a region opened as every kernel opens its regions");
}
