// cnnkit._C's optimizer steps (ops/optim.h): fused steps over flat buffers, updated in place, CPU and CUDA.
#include "bind/common.h"
#include "ops/optim.h"

using namespace ck::bind;

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

#if defined(CNNKIT_WITH_CUDA)
namespace {

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

void register_optim(py::module_& m) {
  m.def("sgd_step", &sgd_step, py::arg("p"), py::arg("g"), py::arg("momentum_buffer").none(true), py::arg("neg_lr"),
        py::arg("momentum"), py::arg("one_minus_dampening"), py::arg("nesterov"), py::arg("first"), py::arg("gscale"),
        py::arg("gclip"), py::arg("wd"), py::arg("l1"));
  m.def("adagrad_step", &adagrad_step, py::arg("p"), py::arg("g"), py::arg("sum"), py::arg("neg_clr"), py::arg("eps"),
        py::arg("gscale"), py::arg("gclip"), py::arg("wd"), py::arg("l1"));
  m.def("rmsprop_step", &rmsprop_step, py::arg("p"), py::arg("g"), py::arg("square_avg"),
        py::arg("grad_avg").none(true), py::arg("momentum_buffer").none(true), py::arg("neg_lr"), py::arg("alpha"),
        py::arg("eps"), py::arg("momentum"), py::arg("gscale"), py::arg("gclip"), py::arg("wd"), py::arg("l1"));
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
#if defined(CNNKIT_WITH_CUDA)
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
  m.def("grad_sumsq_workspace_cuda", &ck::grad_sumsq_workspace_cuda,
        "float64 elements of scratch grad_sumsq_cuda needs");
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
}
