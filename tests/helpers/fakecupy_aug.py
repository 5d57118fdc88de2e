"""The stand-in's augmentation route (tests/helpers/fakecupy.py): the CUDA binding's pointer interface served
by the CPU kernel on the fake arrays' own buffers."""
import ctypes

import numpy as np


def _at(ptr, shape, dtype):
    """The numpy array of `shape` at address ptr: a fake array's own buffer (its .data.ptr)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if n == 0:
        return np.empty(shape, dtype)
    return np.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=dtype).reshape(shape)


class AugBinding:
    """cnnkit._C for _cuda_ops, with aug_pipeline_cuda (integer pointers, as the CUDA binding takes them) run by
    the CPU binding on the fake arrays' buffers, so cnnkit.ops.augment's checks and _cuda_ops.aug_pipeline's
    pointer passing are exercised."""

    def __init__(self, c):
        self._c = c

    def __getattr__(self, name):
        return getattr(self._c, name)

    def aug_pipeline_cuda(self, x, y, ids, x_shape, stages, seed, epoch, records, dtype, stream):
        T = (np.float32, np.float64)[dtype]
        N, C = x_shape[:2]
        P, Q = stages[-1][3], stages[-1][4]
        host = [(k, s, a, p, q, _at(ev, (C,), np.float64) if k == 5 else None,
                 _at(vec, (C, C), np.float64) if k == 5 else None) for k, s, a, p, q, ev, vec in stages]
        self._c.aug_pipeline(_at(x, x_shape, T), _at(y, (N, C, P, Q), T), _at(ids, (N,), np.int64), host, seed,
                             epoch, 0, _at(records, (N, 16), np.float64) if records else None)
