"""Train under mpiexec -n 2 with a checkpoint every 5 steps; at step 23 rank 1 fails as argv[1] says:
"kill" (SIGKILL itself), "exit" (os._exit(3)), "raise" (an exception) or "hang" (sleeps; the other rank's
watchdog must end the job). argv[2]: the checkpoint folder."""
import os
import signal
import sys
import time

import numpy as np

import cnnkit as ck
from common import B, convnet, data

how, folder = sys.argv[1], sys.argv[2]
ck.set_num_threads(1)
ck.distributed.init(timeout=3)


class FailAt(ck.train.callbacks.Callback):
    def on_step_end(self, trainer, step, loss):
        if step == 23 and ck.distributed.rank() == 1:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif how == "exit":
                os._exit(3)
            elif how == "raise":
                raise RuntimeError("rank 1 was told to fail")
            else:
                time.sleep(120)


model = convnet(np.float32)
trainer = ck.Trainer(model, ck.optim.SGD(model.parameters(), lr=0.05), callbacks=[FailAt()], distributed=True,
                     progress=False)
trainer.fit(data(np.float32), epochs=1, batch_size=B, checkpoint_dir=folder, checkpoint_every_steps=5)
