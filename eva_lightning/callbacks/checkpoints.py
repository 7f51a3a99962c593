"""The two checkpoints a run keeps: ``last.ckpt`` after every epoch, ``best-*.ckpt`` with a held-out split."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.runs.layout import LAST


@batch_hooks_only_where_used
class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint without the five batch hooks it leaves as no-ops (see callbacks/hooks.py)."""

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's own key ("ModelCheckpoint{...}"), so checkpoints resume across the two
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._fitting = stage == "fit"

    def load_state_dict(self, state_dict: dict) -> None:
        # validate/test/predict save nothing: the writer's best scores and paths would only make it warn
        if getattr(self, "_fitting", True):
            super().load_state_dict(state_dict)


def latest_checkpoint() -> ModelCheckpoint:
    """``last.ckpt`` after every epoch: the model of record, what ``--ckpt_path last`` resumes (not ``save_last``:
    that writes only beside a top-k save, stuck at a monitored metric's last improvement)."""
    return EpochCheckpoint(filename=Path(LAST).stem, monitor=None, save_top_k=1, enable_version_counter=False)


def held_out_checkpoint() -> ModelCheckpoint:
    """``best-*.ckpt``: the epoch of best ``val/acc``, kept only when validation is held out of train."""
    return EpochCheckpoint(
        monitor="val/acc",
        mode="max",
        filename="best-epoch{epoch:02d}-acc{val/acc:.4f}",
        auto_insert_metric_name=False,
    )
