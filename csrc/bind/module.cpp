// cnnkit._C_<isa>: one register_<family>(m) per csrc/bind/*.cpp file. CMake builds one module per instruction
// set and names it through CNNKIT_MODULE_NAME; cnnkit/_C.py loads the one the CPU runs.
#include "bind/common.h"
#include "common/runtime.h"

#ifndef CNNKIT_MODULE_NAME
#define CNNKIT_MODULE_NAME _C_native
#endif

PYBIND11_MODULE(CNNKIT_MODULE_NAME, m) {
  m.doc() = "cnnkit kernels (raw; use cnnkit.ops, which validates arguments first)";
  ck::runtime_init();
  register_conv2d(m);
  register_maxpool2d(m);
  register_dropout(m);
  register_relu(m);
  register_matmul(m);
  register_batchnorm(m);
  register_runtime(m);
  register_optim(m);
  register_augment(m);
}
