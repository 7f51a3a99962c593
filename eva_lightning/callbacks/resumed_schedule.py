""":class:`ResumedSchedule`: a resumed run whose one-cycle or cosine schedule would have to stretch is refused in one line."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

from eva_lightning.core.hooks import batch_hooks_only_where_used
from eva_lightning.core.errors import EvaError

#: the schedulers whose length is fixed when they start, and the state key that holds it
FIXED_LENGTH = {OneCycleLR: ("one-cycle", "total_steps"), CosineAnnealingLR: ("cosine", "T_max")}


@batch_hooks_only_where_used
class ResumedSchedule(Callback):
    """``--ckpt_path`` with more (or fewer) steps than the checkpoint's schedule was built for: Lightning would load
    the saved scheduler over the new one and torch's OneCycleLR fails at its last step ("Tried to step N times"); a
    cosine restarts its cycle. Checked after the new schedule is built and before the saved one is loaded."""

    def __init__(self) -> None:
        self._saved: list[dict] = []
        self._path: str | None = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._saved = list(checkpoint.get("lr_schedulers") or [])
        self._path = trainer.ckpt_path

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        saved, self._saved = self._saved, []
        for config, state in zip(trainer.lr_scheduler_configs, saved):
            name, key = next(((n, k) for cls, (n, k) in FIXED_LENGTH.items() if isinstance(config.scheduler, cls)),
                             (None, None))
            if name is None or key not in state or state[key] == getattr(config.scheduler, key):
                continue
            was, now, epochs = state[key], getattr(config.scheduler, key), trainer.max_epochs
            per_epoch = now / max(1, epochs or 1)
            raise EvaError(
                f"--ckpt_path {self._path}: its {name} schedule spans {was} steps (about {was / per_epoch:g} epochs) "
                f"and this run would need {now} (trainer.max_epochs={epochs}); a {name} schedule's shape is fixed by "
                "its length when it starts, so it cannot be stretched or shrunk. To train on from those weights, "
                f"start a new run with a schedule of its own: add --weights_from {self._path} instead of --ckpt_path; "
                "to finish the original run, resume it with its own trainer.max_epochs")
