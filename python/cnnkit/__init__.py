"""cnnkit: train convolutional networks from Python on fast C++ (OpenMP) and CUDA kernels.

The compiled kernels live in ``cnnkit._C``; ``cnnkit.ops`` is their validated face.
"""
import os as _os

# Thread-control variables are read when each library loads, so they are set before libgomp (and numpy's
# OpenBLAS, when numpy has not been imported yet) are loaded. Idle OpenMP workers then sleep instead of
# spinning against other thread pools in the process (numpy's BLAS, PyTorch) on small machines. User
# settings win.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import _C  # noqa: E402,F401  (the kernels)
from . import cuda, ops  # noqa: E402,F401
from .parameter import FlatBuffer, Parameter  # noqa: E402
from . import data  # noqa: E402,F401  datasets, preprocessing, augmentation, batching

from ._runtime import __version__, build_info, get_num_threads, set_num_threads  # noqa: E402,F401
from .ops import get_conv_algorithm, set_conv_algorithm  # noqa: E402,F401

__all__ = ["ops", "cuda", "data", "Parameter", "FlatBuffer", "set_num_threads", "get_num_threads", "build_info",
           "set_conv_algorithm", "get_conv_algorithm"]

# The layer graph: layers, models, losses, initialisers, gradient checks, save/load.
from . import init, losses  # noqa: E402
from .graph import Graph, Input, Layer, Model, Node, Sequential  # noqa: E402
from .layers import (Add, AvgPool2d, BatchNorm1d, BatchNorm2d, Concat, Conv2d, DropConnect, Dropout,  # noqa: E402
                     Flatten, FractionalMaxPool2d, GlobalAvgPool2d, LeakyReLU, Linear, LocallyConnected2d,
                     LocalResponseNorm, MaxPool2d, ReLU, StochasticDepth)
from .gradcheck import GradcheckError, GradcheckReport, gradcheck  # noqa: E402
from .serialize import load  # noqa: E402
from .init import manual_seed  # noqa: E402

__all__ += ["init", "losses", "Layer", "Model", "Node", "Input", "Sequential", "Graph", "Add", "AvgPool2d",
            "BatchNorm1d", "BatchNorm2d", "Concat", "Conv2d", "DropConnect", "Dropout", "Flatten",
            "FractionalMaxPool2d", "GlobalAvgPool2d", "LeakyReLU", "Linear", "LocallyConnected2d",
            "LocalResponseNorm", "MaxPool2d", "ReLU", "StochasticDepth", "gradcheck", "GradcheckError",
            "GradcheckReport", "load", "manual_seed"]
from . import optim  # noqa: E402,F401  optimizers
from . import schedules  # noqa: E402,F401  learning-rate schedules
from . import regularizers  # noqa: E402,F401  L2 / L1 / elastic-net penalties
from .lr_finder import lr_find  # noqa: E402,F401  LR range test

# Training: the trainer, history and plots, checkpoints, callbacks, ensembles.
from . import train  # noqa: E402,F401
from .train import EMA, SWA, EarlyStopping, Ensemble, Polyak, SnapshotEnsemble, SnapshotSaver, Trainer  # noqa: E402
from .train import ModelCheckpoint, TensorBoard  # noqa: E402

__all__ += ["train", "Trainer", "EarlyStopping", "EMA", "Polyak", "SWA", "SnapshotSaver", "Ensemble",
            "SnapshotEnsemble", "ModelCheckpoint", "TensorBoard"]
from . import search  # noqa: E402,F401  hyperparameter search
from . import zoo  # noqa: E402,F401  model zoo and transfer learning
from .layers import AdaptiveAvgPool2d  # noqa: E402,F401

__all__ += ["zoo", "AdaptiveAvgPool2d"]

# torch.nn's activations: the smooth ones, Softmax / LogSoftmax, Identity, PReLU.
from .layers import ELU, GELU, Identity, LogSoftmax, PReLU, Sigmoid, SiLU, Softmax, Tanh  # noqa: E402

__all__ += ["Tanh", "Sigmoid", "SiLU", "ELU", "GELU", "Softmax", "LogSoftmax", "Identity", "PReLU"]

# Per-sample normalisation, as torch.nn.
from .layers import GroupNorm, InstanceNorm2d, LayerNorm  # noqa: E402

__all__ += ["LayerNorm", "GroupNorm", "InstanceNorm2d"]

# Torch-style models: ck.Module with a recorded forward, the values it records, cnnkit.functional.
from .autograd import Tensor, no_grad  # noqa: E402
from .module import Module, ModuleDict, ModuleList  # noqa: E402
from . import functional  # noqa: E402,F401
from . import nn  # noqa: E402,F401  torch.nn's names: the layers, Module, the loss classes

__all__ += ["Tensor", "no_grad", "Module", "ModuleList", "ModuleDict", "functional", "nn"]

# torch.nn layers that change the spatial size
from .layers import AdaptiveMaxPool2d, ConvTranspose2d, Dropout2d, Upsample, ZeroPad2d  # noqa: E402

__all__ += ["ConvTranspose2d", "ZeroPad2d", "Upsample", "Dropout2d", "AdaptiveMaxPool2d"]
from . import onnx  # noqa: E402,F401  ck.onnx.export (needs the onnx extra only when called)
from .serialize import save_any as save  # noqa: E402,F401  ck.save: a model file, or nested data (ck.load reads both)
__all__ += ["onnx", "save"]

from . import profiler  # noqa: E402,F401  ck.profiler.profile(), record_function

__all__ += ["profiler"]

# Data-parallel training (MPI on CPUs, NCCL on GPUs); mpi4py is needed only once init() is called.
from . import distributed  # noqa: E402,F401
from .layers import SyncBatchNorm  # noqa: E402

__all__ += ["distributed", "SyncBatchNorm"]
