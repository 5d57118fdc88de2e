// cnnkit._C's data augmentation (cnnkit.data.transforms): the CPU pipeline and its CUDA twin.
#include "bind/common.h"
#include "ops/augment.h"

using namespace ck::bind;

namespace {

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
        if (device) {  // shapes were checked on the CuPy arrays by cnnkit/ops/augment.py
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
      default: ck::fail(op, "unknown stage kind ", st.kind);
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

void aug_pipeline(const py::array& x, const py::array& y, const py::array& ids, const py::list& stages, uint64_t seed,
                  uint32_t epoch, int num_threads, const py::object& records) {
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

}  // namespace

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

void register_augment(py::module_& m) {
  m.def("aug_pipeline", &aug_pipeline, py::arg("x"), py::arg("y"), py::arg("ids"), py::arg("stages"), py::arg("seed"),
        py::arg("epoch"), py::arg("num_threads"), py::arg("records").none(true));
  m.def("philox_keys", &philox_keys, py::arg("keys"), py::arg("seed"), py::arg("epoch"), py::arg("stream"));
  m.attr("aug_record") = ck::kAugRecord;  // values recorded per sample: records is (N, aug_record)
  {
    py::dict kinds;  // the stage kinds (augment.h, AugKind), as cnnkit.data.transforms names them
    kinds["hflip"] = int(ck::kHFlip);
    kinds["crop"] = int(ck::kCrop);
    kinds["resized_crop"] = int(ck::kResizedCrop);
    kinds["jitter"] = int(ck::kJitter);
    kinds["lighting"] = int(ck::kLighting);
    kinds["affine"] = int(ck::kAffine);
    m.attr("aug_kinds") = kinds;
  }
#if defined(CNNKIT_WITH_CUDA)
  m.def("aug_pipeline_cuda", &cu_aug_pipeline, py::arg("x"), py::arg("y"), py::arg("ids"), py::arg("x_shape"),
        py::arg("stages"), py::arg("seed"), py::arg("epoch"), py::arg("records"), py::arg("dtype"), py::arg("stream"));
#endif
}
