// cnnkit._cpu: which of cnnkit's instruction-set levels this CPU (and its operating system) runs, asked before
// any kernel module is loaded. Plain CPython API and baseline flags, so it loads on any x86-64 (or other) CPU.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string>

namespace {

PyObject* supported(PyObject*, PyObject*) {
  std::string out;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  // x86-64-v4: AVX-512 F/CD/BW/DQ/VL; x86-64-v3: AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE. libgcc's test also
  // checks that the OS saves the wider registers (XCR0).
  if (__builtin_cpu_supports("x86-64-v4")) out += "avx512,";
  if (__builtin_cpu_supports("x86-64-v3")) out += "avx2,";
#endif
  out += "generic";
  return PyUnicode_FromString(out.c_str());
}

PyMethodDef kMethods[] = {
    {"supported", supported, METH_NOARGS,
     "The instruction-set levels this CPU runs, best first, comma-separated (e.g. 'avx512,avx2,generic')."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT,
                       "_cpu",
                       "cnnkit's CPU check (see supported())",
                       -1,
                       kMethods,
                       nullptr,
                       nullptr,
                       nullptr,
                       nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__cpu() { return PyModule_Create(&kModule); }
