// cnnkit._C's runtime functions: build information, CUDA status, OpenMP threads.
#include "bind/common.h"
#include "common/runtime.h"
#include "gemm/gemm.h"

using namespace ck::bind;

namespace {

py::dict build_info() {
  py::dict d;
  d["version"] = CNNKIT_VERSION;
  d["cuda"] = ck::cuda_built();
  d["cuda_archs"] = ck::cuda_built() ? std::string(CNNKIT_CUDA_ARCHS) : std::string();
  d["isa"] = ck::gemm_isa();
  d["gemm_kernels"] = ck::gemm_isa_supported();  // the micro-kernels of this module the CPU runs
  d["openmp"] = ck::openmp_version();
  d["num_threads"] = ck::get_num_threads();
  d["simd"] = ck::simd_level();
  d["malloc"] = ck::malloc_policy();
  d["module_isa"] = ck::build_isa();
  d["build_flags"] = ck::build_flags();
  d["compiler"] = __VERSION__;
  return d;
}

py::tuple cuda_status() {
  std::string why;
  int n = ck::cuda_device_count(&why);
  return py::make_tuple(n, why);
}

}  // namespace

void register_runtime(py::module_& m) {
  m.def("set_num_threads", &ck::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &ck::get_num_threads);
  m.def("build_info", &build_info);
  m.def("cuda_status", &cuda_status, "(device_count, reason) from the CUDA runtime; never throws");
  m.def("_set_isa", &ck::set_gemm_isa, py::arg("name"),
        "private test hook: switch the float32 GEMM micro-kernel (as CNNKIT_ISA does at load time)");
  m.def("_threads_in_region", &ck::threads_in_region,
        "private test probe: omp_get_num_threads() inside a region opened as every kernel opens its regions");
}
