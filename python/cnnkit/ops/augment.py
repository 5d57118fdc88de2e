"""augment: the data-augmentation pipeline behind cnnkit.data.transforms, a run of stages in one kernel call."""
import numpy as np

from .. import _C
from .._validate import check_array, empty, first_array
from . import _backend

_AUG_RECORD = _C.aug_record  # values recorded per sample (kAugRecord in csrc/ops/augment.h)


def aug_pipeline(x, ids, stages, seed, epoch, num_threads=0, records=None):
    """y (N, C, P, Q): the stages run over x (N, C, H, W) float32/float64, on x's device.

    ids: (N,) int64 on x's device, the samples' dataset indices (the key of their Philox streams); stages: the
    (kind, stream, a, P, Q, eigval, eigvec) tuples cnnkit.data.transforms builds, a lighting stage's eigval (C,)
    and eigvec (C, C) float64 on x's device (each stage's parameters are checked by the kernel binding);
    num_threads: OpenMP threads on the CPU (0: the current setting; a GPU runs the batch in one launch);
    records: None or (N, 16) float64 on x's device, written with the first stage's draws. On a GPU the kernels
    are queued on CuPy's current stream and nothing is synchronised.
    """
    op = "augment"
    ref = first_array(op, "x", x, ndim=4)
    N, C = x.shape[0], x.shape[1]
    check_array(op, "ids", ids, ref, ndim=1, dtype=np.int64)
    if tuple(ids.shape) != (N,):
        raise ValueError(f"{op}: ids must have shape ({N},) (one index per sample), got {tuple(ids.shape)}")
    if records is not None:
        check_array(op, "records", records, ref, ndim=2, dtype=np.float64)
        if tuple(records.shape) != (N, _AUG_RECORD):
            raise ValueError(f"{op}: records must have shape ({N}, {_AUG_RECORD}), got {tuple(records.shape)}")
    if not stages:
        raise ValueError(f"{op}: stages must not be empty")
    for kind, stream, a, P, Q, eigval, eigvec in stages:
        if eigval is not None or eigvec is not None:
            check_array(op, "eigval", eigval, ref, ndim=1, dtype=np.float64)
            check_array(op, "eigvec", eigvec, ref, ndim=2, dtype=np.float64)
            if tuple(eigval.shape) != (C,) or tuple(eigvec.shape) != (C, C):
                raise ValueError(f"{op}: eigval must be ({C},) and eigvec ({C}, {C}) for x with C = {C}, got "
                                 f"{tuple(eigval.shape)} and {tuple(eigvec.shape)}")
    P, Q = stages[-1][3], stages[-1][4]
    y = empty(op, "y", (N, C, P, Q), x.dtype, ref)
    _backend.kernels(x).aug_pipeline(x, y, ids, list(stages), seed, epoch, num_threads, records)
    return y
