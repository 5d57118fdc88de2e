"""SyncBatchNorm under mpiexec -n 2 against BatchNorm on one process with the whole batch (float64): rank r
normalises rows [rB, (r+1)B) of x, back-propagates the same rows of dy; rank 0 gathers the outputs, input
gradients, summed weight and bias gradients and running statistics, and saves them with the one-process
ones to argv[1] (.npz)."""
import sys

import numpy as np
from mpi4py import MPI

import cnnkit as ck

ck.set_num_threads(1)
ck.distributed.init(timeout=60)
comm, rank, world = MPI.COMM_WORLD, ck.distributed.rank(), ck.distributed.world_size()
out = {}
for shape in ((6, 3, 5, 4), (10, 4)):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((shape[0] * world,) + shape[1:]) * 3 + 2
    dy = rng.standard_normal(x.shape)
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    rows = slice(rank * shape[0], (rank + 1) * shape[0])
    layer = ck.SyncBatchNorm(shape[1], dtype=np.float64)
    layer.weight.data[...], layer.bias.data[...] = w, b
    y = layer.forward(np.ascontiguousarray(x[rows]))
    dx = layer.backward(np.ascontiguousarray(dy[rows]))
    dw, db = layer.weight.grad.copy(), layer.bias.grad.copy()
    comm.Allreduce(MPI.IN_PLACE, dw)
    comm.Allreduce(MPI.IN_PLACE, db)
    ys, dxs = comm.gather(y, root=0), comm.gather(dx, root=0)
    if rank == 0:
        ref = (ck.BatchNorm1d if len(shape) == 2 else ck.BatchNorm2d)(shape[1], dtype=np.float64)
        ref.weight.data[...], ref.bias.data[...] = w, b
        ry = ref.forward(x)
        rdx = ref.backward(dy)
        tag = f"{len(shape)}d"
        out.update({f"{tag}/y": np.concatenate(ys), f"{tag}/ref_y": ry, f"{tag}/dx": np.concatenate(dxs),
                    f"{tag}/ref_dx": rdx, f"{tag}/dw": dw, f"{tag}/ref_dw": ref.weight.grad, f"{tag}/db": db,
                    f"{tag}/ref_db": ref.bias.grad})
        for k in ("running_mean", "running_var"):
            out[f"{tag}/{k}"] = layer._buffers[k]
            out[f"{tag}/ref_{k}"] = ref._buffers[k]
if rank == 0:
    np.savez(sys.argv[1], **out)
