"""cupy.cuda.nccl for the CuPy stand-in (tests/helpers/fakecupy.py), over MPI: a "device" pointer of the
stand-in is host memory, so allReduce and bcast run MPI's on the bytes at that address. Counts its calls, so a
test can see that device gradients went through NCCL and not through the host MPI path."""
import ctypes
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

CALLS = {"allReduce": 0, "bcast": 0}
_TYPES = {0: np.float32, 1: np.float64, 2: np.int64}


class NcclCommunicator:
    def __init__(self, ndev, uid, rank):
        assert uid == ("fake-nccl-id",) and ndev == MPI.COMM_WORLD.Get_size() and rank == MPI.COMM_WORLD.Get_rank()
        self.comm = MPI.COMM_WORLD

    @staticmethod
    def _view(ptr, count, dtype):
        t = np.dtype(_TYPES[dtype])
        return np.frombuffer((ctypes.c_char * (count * t.itemsize)).from_address(ptr), dtype=t)

    def allReduce(self, sendptr, recvptr, count, dtype, op, stream):
        assert sendptr == recvptr and op == 0
        CALLS["allReduce"] += 1
        self.comm.Allreduce(MPI.IN_PLACE, self._view(recvptr, count, dtype))

    def bcast(self, ptr, count, dtype, root, stream):
        CALLS["bcast"] += 1
        self.comm.Bcast(self._view(ptr, count, dtype), root=root)


def install_fake_gpu():
    """The CuPy stand-in as `cupy`, with this module's NCCL as `cupy.cuda.nccl`, for the rest of the process."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from helpers import fakecupy
    m = fakecupy.install(pytest.MonkeyPatch())
    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64, nccl.NCCL_INT64, nccl.NCCL_SUM = 0, 1, 2, 0
    nccl.get_unique_id = lambda: ("fake-nccl-id",)
    nccl.NcclCommunicator = NcclCommunicator
    m.cuda.nccl = nccl
    sys.modules["cupy.cuda.nccl"] = nccl
    return m
