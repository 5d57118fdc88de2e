"""Training: ck.Trainer, its History, checkpoints, callbacks (early stopping, the best model's file, TensorBoard
logs, weight averaging, snapshots), ensembles and the babysitting sanity check."""
from .callbacks import EMA, SWA, Callback, EarlyStopping, ModelCheckpoint, Polyak, SnapshotSaver, WeightAverage
from .checkpoint import CheckpointError
from .ensemble import Ensemble, SnapshotEnsemble
from .history import History
from .sanity import SanityReport
from .tensorboard import TensorBoard
from .trainer import Trainer

__all__ = ["Trainer", "History", "Callback", "EarlyStopping", "EMA", "Polyak", "SWA", "WeightAverage",
           "SnapshotSaver", "Ensemble", "SnapshotEnsemble", "CheckpointError", "SanityReport", "ModelCheckpoint",
           "TensorBoard"]
