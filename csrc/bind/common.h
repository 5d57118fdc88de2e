// Shared by the csrc/bind/*.cpp files, which hold the pybind11 wrappers of cnnkit._C (one file per op
// family, its CPU and CUDA wrappers side by side). The wrappers check array dtypes and layouts, take raw
// pointers, release the GIL and call the kernels. They do no math and never copy or cast: outputs are
// allocated by the Python ops layer (cnnkit/ops) and every array must already be C-contiguous with the exact
// dtype.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/check.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace py = pybind11;
using Pair = std::array<int64_t, 2>;

namespace ck::bind {

inline std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// dtypes compare by value (numpy's PyArray_EquivTypes: kind, size and byte order), never by object identity:
// an array that went through pickle or np.dtype("float32") carries an equal dtype that is another object.
inline bool same_dtype(const py::dtype& a, const py::dtype& b) {
  return py::detail::npy_api::get().PyArray_EquivTypes_(a.ptr(), b.ptr());
}

// Raw pointer of an array that must have exactly dtype T, be C-contiguous and (for outputs) writable.
template <typename T>
inline T* ptr(const py::array& a, const char* op, const char* name, bool writable = false) {
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

inline void expect_shape(const char* op, const char* name, const py::array& a, const std::vector<int64_t>& want) {
  if (shape_of(a) != want)
    ck::fail(op, name, " must have shape ", ck::shape_str(want), ", got ", ck::shape_str(shape_of(a)));
}

enum class DType { f32, f64 };
inline DType float_dtype(const py::array& a, const char* op, const char* name) {
  if (same_dtype(a.dtype(), py::dtype::of<float>())) return DType::f32;
  if (same_dtype(a.dtype(), py::dtype::of<double>())) return DType::f64;
  throw py::type_error(std::string(op) + ": " + name + " must be float32 or float64, got " + dtype_name(a));
}

inline void same_size(const char* op, const char* a_name, const py::array& a, const char* b_name, const py::array& b) {
  if (shape_of(a) != shape_of(b))
    ck::fail(op, b_name, " must have the shape of ", a_name, " ", ck::shape_str(shape_of(a)), ", got ",
             ck::shape_str(shape_of(b)));
}

// ==== CUDA entry points (compiled only with CNNKIT_WITH_CUDA) ====
// The Python side (cnnkit/ops/_cuda.py) validates CuPy arrays and passes integers: device pointers from
// __cuda_array_interface__, shapes, a dtype code (0 = float32, 1 = float64) and CuPy's current stream. These
// functions re-validate the shapes with the same make_*_params as the CPU path and never touch device memory
// on the host; the kernels are queued on that stream and nothing is synchronised.
#if defined(CNNKIT_WITH_CUDA)
using Shape = std::vector<int64_t>;

template <typename T>
inline T* dptr(std::uintptr_t a) {
  return reinterpret_cast<T*>(a);
}

inline CUstream_st* as_stream(std::uintptr_t s) { return reinterpret_cast<CUstream_st*>(s); }

inline void nonneg(const char* op, int64_t n) {
  if (n < 0) ck::fail(op, "n must be >= 0, got ", n);
}

inline void nonnull(const char* op, const char* name, std::uintptr_t a, int64_t n) {
  if (a == 0 && n > 0) ck::fail(op, name, " is a null device pointer for ", n, " elements");
}

// Runs f(float{}) or f(double{}) for dtype code 0 or 1, with the GIL released (no Python object is used).
template <typename F>
inline void by_dtype(const char* op, int dtype, F&& f) {
  if (dtype != 0 && dtype != 1) ck::fail(op, "dtype code must be 0 (float32) or 1 (float64), got ", dtype);
  py::gil_scoped_release nogil;
  dtype == 0 ? f(float{}) : f(double{});
}

inline int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}
#endif  // CNNKIT_WITH_CUDA

}  // namespace ck::bind

// One per csrc/bind/*.cpp file: adds that family's functions (CPU, and CUDA when built) to the module.
void register_conv2d(py::module_& m);
void register_maxpool2d(py::module_& m);
void register_dropout(py::module_& m);
void register_relu(py::module_& m);
void register_matmul(py::module_& m);
void register_batchnorm(py::module_& m);
void register_runtime(py::module_& m);
void register_optim(py::module_& m);
void register_augment(py::module_& m);
