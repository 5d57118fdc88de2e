"""Train tests/dist_scripts/common.convnet for 50 steps and save its parameters.

  python train_equal.py single DTYPE OUT [bn|graph|module] [fakegpu]          one process, batch 2B
  mpiexec -n 2 python train_equal.py dist DTYPE OUT [bn|graph|module] [fakegpu]   batch B per rank; rank r
  writes OUT.r.npz. graph: common.resnet_graph; module: common.ModuleNet (a ck.Module); default: convnet.
Each rank starts from a different seed: rank 0's weights reach the others by the broadcast. With "bn" the
model has BatchNorm2d layers, converted to SyncBatchNorm in the distributed run; with "fakegpu" it trains on
the CuPy stand-in (tests/helpers/fakecupy.py) and the gradients go through the NCCL backend (fake_nccl.py)."""
import json
import sys

import numpy as np

import cnnkit as ck
from common import B, MODELS, convnet, data, host, save_params

mode, dtype, out = sys.argv[1], np.dtype(sys.argv[2]), sys.argv[3]
ck.set_num_threads(1)
world = 2
if mode == "dist":
    ck.distributed.init(timeout=60, bucket_mb=0.002)   # small buckets: several, started inside backward
    world = ck.distributed.world_size()
rank = ck.distributed.rank()
bn, fake_gpu = "bn" in sys.argv[4:], "fakegpu" in sys.argv[4:]
if fake_gpu:
    from fake_nccl import install_fake_gpu
    install_fake_gpu()
kind = next((k for k in MODELS if k in sys.argv[4:]), "convnet")
model = convnet(dtype, seed=7 + rank, bn=bn) if bn else MODELS[kind](dtype, seed=7 + rank)
if bn and mode == "dist":
    ck.distributed.convert_sync_batchnorm(model)
if fake_gpu:
    model.to("cuda")
opt = ck.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
trainer = ck.Trainer(model, opt, distributed=mode == "dist", progress=False, ratio_every=0)
x, y = data(dtype, world=world)
batch = B if mode == "dist" else B * world
hist = trainer.fit((x, y), epochs=1, batch_size=batch, seed=3)
suffix = f".{rank}" if mode == "dist" else ""
save_params(model, f"{out}{suffix}.npz")
np.savez(f"{out}{suffix}.buffers.npz", **{n: host(b) for n, b in model.named_buffers()})
info = {"steps": trainer.step, "loss": hist.iterations["loss"]}
if fake_gpu:
    import fake_nccl
    from helpers import fakecupy
    info.update(nccl=fake_nccl.CALLS, syncs=[w for w, _ in fakecupy.SYNCS])
if mode == "dist":
    r = trainer._dist.reducer
    info.update(buckets=len(r), started_in_backward=r.started_in_backward)
with open(f"{out}{suffix}.json", "w") as f:
    json.dump(info, f, default=float)
