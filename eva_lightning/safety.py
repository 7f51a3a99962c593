"""Callbacks that keep a run safe when things go wrong (checkpoint files: :mod:`eva_lightning.checkpoints`).

- :class:`RngState` puts the global RNG states (torch, numpy, Python, CUDA) into each checkpoint
  and restores them on resume, so a resumed run draws the same shuffles as an uninterrupted one.
- :class:`FiniteLossGuard` stops training at the first NaN/inf loss, before any checkpoint of the
  diverged weights is written, and says where and why.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from eva_lightning.errors import EvaError

log = logging.getLogger(__name__)


def _plain_rng_states() -> dict[str, Any]:
    """The global RNG states as tensors and Python scalars, which ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, gauss_py = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": (version, list(state), gauss_py),
    }
    if torch.cuda.is_available():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss_py = states["python"]
    random.setstate((version, tuple(state), gauss_py))
    cuda = states.get("torch.cuda", [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)  # a checkpoint from another machine keeps this machine's CUDA seeds


class RngState(Callback):
    """Global RNG states in the checkpoint, restored on resume.

    Lightning restores weights, optimiser, schedulers, loops and callback states, but not the
    RNGs: a resumed run would shuffle the next epoch from the seed's start state instead of where
    the interrupted run was. Restoring happens while Lightning restores callbacks, which is after
    the model was built (its init draws from the RNG) and before the first training batch is
    drawn; in DDP every rank gets rank 0's states (ranks start from the same seed anyway).
    """

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _plain_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            _restore_rng_states(state_dict["rng"])


class FiniteLossGuard(Callback):
    """Stop at the first NaN/inf training loss with where and the likely cause.

    Raising before the next checkpoint means no checkpoint of the diverged weights is written, so
    ``last.ckpt`` stays the last good one. (``EarlyStopping(check_finite=True)`` looks only at an
    epoch-end metric, after ``ModelCheckpoint`` may already have saved NaN weights.) On a GPU
    reading the loss every step would stall the device queue, so the first bad step is recorded
    on the device and read every ``check_every_n_steps`` and always before validation and at the
    end of each epoch (before ``ModelCheckpoint`` saves); on a CPU it is read every step. In DDP
    the decision is shared by all ranks so none is left waiting in a collective.

    Args:
        check_every_n_steps: on accelerators, steps between reads of the device-side record.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._first: dict[str, torch.Tensor] | None = None  # epoch/step/batch/nan of the first bad loss, -1: none

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach()
        if self._first is None or self._first["step"].device != loss.device:
            self._first = {k: torch.full((), -1, dtype=torch.long, device=loss.device) for k in ("epoch", "step", "batch", "nan")}
        new = ~torch.isfinite(loss).all() & (self._first["step"] < 0)
        here = {"epoch": trainer.current_epoch, "step": trainer.global_step, "batch": batch_idx}
        for key, value in here.items():  # python scalars: no host-to-device copy, no sync
            self._first[key] = torch.where(new, value, self._first[key])
        self._first["nan"] = torch.where(new, torch.isnan(loss).any().long(), self._first["nan"])
        if loss.device.type == "cpu" or (batch_idx + 1) % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._first is None:
            return
        first = {k: int(v) for k, v in self._first.items()}  # the one device sync
        if not trainer.strategy.reduce_boolean_decision(first["step"] >= 0, all=False):
            return
        if first["step"] >= 0:
            what = "NaN" if first["nan"] else "inf"
            where = f"at epoch {first['epoch']}, step {first['step']} (batch {first['batch']})"
        else:
            what, where = "NaN/inf", f"on another process by epoch {trainer.current_epoch}"
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        lr = f" with lr={lrs[0]:.3g}" if lrs else ""
        kept = [Path(cb.last_model_path) for cb in trainer.checkpoint_callbacks if getattr(cb, "last_model_path", "")]
        kept_msg = f"The last good checkpoint is kept: {kept[0]}." if kept else "No checkpoint was written yet."
        raise EvaError(
            f"the training loss became {what} {where}{lr}. The likely cause is a learning rate that is too "
            f"high: lower model.init_args.lr / the optimiser's lr (eva lr_find suggests one), or the schedule's "
            f"peak. {kept_msg}"
        )
