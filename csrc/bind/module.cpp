// cnnkit._C: one register_<family>(m) per csrc/bind/*.cpp file.
#include "bind/common.h"
#include "common/runtime.h"

PYBIND11_MODULE(_C, m) {
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
