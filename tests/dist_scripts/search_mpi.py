"""Run `mpiexec -n 3 python -m mpi4py.futures search_mpi.py OUT`: a coarse-to-fine search whose trials run
on the MPIPoolExecutor's worker ranks; writes the trials to OUT (JSON)."""
import json
import os
import sys

from mpi4py.futures import MPIPoolExecutor

from cnnkit.search import coarse_to_fine
from objectives import SPACE, bowl

if __name__ == "__main__":
    with MPIPoolExecutor() as pool:
        res = coarse_to_fine(bowl, SPACE, coarse_trials=6, coarse_epochs=1, fine_trials=3, fine_epochs=2,
                             seed=5, executor=pool)
    with open(sys.argv[1], "w") as f:
        json.dump({"main_pid": os.getpid(), "trials": res.trials}, f)
