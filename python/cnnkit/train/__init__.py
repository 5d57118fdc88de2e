"""Training: ck.Trainer, its History, checkpoints, callbacks (early stopping, weight averaging, snapshots),
ensembles and the babysitting sanity check."""
from .callbacks import EMA, SWA, Callback, EarlyStopping, Polyak, SnapshotSaver, WeightAverage
from .checkpoint import CheckpointError
from .ensemble import Ensemble, SnapshotEnsemble
from .history import History
from .sanity import SanityReport
from .trainer import Trainer

__all__ = ["Trainer", "History", "Callback", "EarlyStopping", "EMA", "Polyak", "SWA", "WeightAverage",
           "SnapshotSaver", "Ensemble", "SnapshotEnsemble", "CheckpointError", "SanityReport"]
