""":class:`Preemption`: on SIGTERM save where the run is, say how to continue, exit 143 (not 0)."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import nullcontext
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from eva_lightning.core.hooks import batch_hooks_only_where_used
from eva_lightning.core.checkpoints import LAST
from eva_lightning.core.errors import Preempted
from eva_lightning.data.resumable import ResumableLoader

log = logging.getLogger(__name__)

CONTINUE = "continue it with the same eva fit command plus --ckpt_path last"


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where the run's ``last.ckpt`` goes (the checkpoint callback named ``last``), None without one."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "filename", None) == Path(LAST).stem and getattr(callback, "dirpath", None):
            return Path(callback.dirpath) / LAST
    return None


@batch_hooks_only_where_used
class Preemption(Callback):
    """On SIGTERM, save ``last.ckpt`` after the current training batch and raise :class:`Preempted` (exit 143).

    Signalled in an epoch's last batch or its validation, the run finishes that epoch first; with several processes
    Lightning's handler stays (:class:`EvaTrainer`). Why and how: docs/internals.md ("Faults round 3")."""

    def __init__(self) -> None:
        self._signal: int | None = None
        self._position: dict | None = None

    def _note(self, signum, frame) -> None:
        self._signal = signum

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Lightning gives a loader its saved state only if it builds the loader after restoring the loops; a
        # one-cycle schedule asks for the epoch's length first (estimated_stepping_batches), which builds it before
        loaders = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader") or []
        self._position = next((state for state in loaders if "order" in state), None)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._signal = None
        position, self._position = self._position, None
        loader = trainer.train_dataloader
        if position is not None and isinstance(loader, ResumableLoader):
            loader.load_state_dict(position)  # (no batch is drawn before the first step: loading twice is harmless)
        # after Lightning's handler (registered just before training); its teardown puts the original one back
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
                           ) -> None:
        if self._signal is None or batch_idx + 1 >= trainer.num_training_batches:
            return  # (the epoch's end is a moment away, with its own checkpoint)
        path = last_checkpoint_path(trainer) if not trainer.fast_dev_run else None
        where = f"epoch {trainer.current_epoch}, batch {batch_idx + 1} of {trainer.num_training_batches}"
        if path is None:
            raise Preempted(f"SIGTERM at {where}; no checkpoint is kept in this run, so nothing was saved")
        loader = trainer.train_dataloader
        with loader.keep_position() if isinstance(loader, ResumableLoader) else nullcontext():
            trainer.save_checkpoint(path)
        raise Preempted(f"SIGTERM at {where} (step {trainer.global_step}): saved that point in {path}; {CONTINUE}")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._signal is not None:
            path = last_checkpoint_path(trainer)
            saved = f"the end of epoch {trainer.current_epoch - 1} is saved in {path}" if path and path.is_file() \
                else "no checkpoint was saved"
            raise Preempted(f"SIGTERM during epoch {trainer.current_epoch - 1}'s end; {saved}; {CONTINUE}")
