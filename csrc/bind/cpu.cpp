// cnnkit._cpu: which of cnnkit's instruction-set levels this CPU (and its operating system) runs, asked before
// any kernel module is loaded. Plain CPython API and baseline flags, so it loads on any x86-64 (or other) CPU.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "common/cpu_level.h"

namespace {

PyObject* supported(PyObject*, PyObject*) { return PyUnicode_FromString(ck::cpu_levels()); }

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
