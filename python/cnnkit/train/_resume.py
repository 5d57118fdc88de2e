"""What Trainer.load_checkpoint saves before restoring a checkpoint, and puts back when a component refuses
its state, so that a failed resume leaves the trainer as it was."""
import copy


class ResumeMixin:
    """Trainer methods for load_checkpoint's all-or-nothing restore."""

    def _snapshot(self, loader):
        """Copies of everything load_checkpoint changes, for _restore."""
        return {"params": [p.data.copy() for p in self.model.parameters()],
                "buffers": [b.copy() for _, b in self.model.named_buffers()],
                "rng": self.model.rng_state(),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "schedule": None if self.schedule is None else copy.deepcopy(self.schedule.state_dict()),
                "loader": None if loader is None else loader.state_dict(),
                "history": copy.deepcopy(self.history.state_dict()),
                "callbacks": [copy.deepcopy(cb.state_dict()) for cb in self.callbacks]}

    def _restore(self, snap, loader):
        for p, a in zip(self.model.parameters(), snap["params"]):
            p.data[...] = a
        for (_, b), a in zip(self.model.named_buffers(), snap["buffers"]):
            b[...] = a
        self.model.set_rng_state(snap["rng"])
        self.optimizer.load_state_dict(snap["optimizer"])
        if snap["schedule"] is not None:
            self.schedule.load_state_dict(snap["schedule"])
        if loader is not None:
            loader.load_state_dict(snap["loader"])
        self.history.load_state_dict(snap["history"])
        for cb, cs in zip(self.callbacks, snap["callbacks"]):
            cb.load_state_dict(cs)
