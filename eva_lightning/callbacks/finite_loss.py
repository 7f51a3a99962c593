""":class:`FiniteLossGuard`: stop at the first NaN/inf loss, before its weights reach a checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.core.errors import EvaError


@batch_hooks_only_where_used
class FiniteLossGuard(Callback):
    """Stop at the first NaN/inf training loss with where and the likely cause.

    Not ``EarlyStopping(check_finite=True)``: it reads an epoch-end metric, after NaN weights may be saved. A read
    per step would stall a GPU, so the first bad step is kept on the device and read every
    ``check_every_n_steps``, before validation and at epoch end; DDP ranks share the decision.

    Args:
        check_every_n_steps: steps between reads of the device-side record.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        if check_every_n_steps < 1:
            raise EvaError(f"FiniteLossGuard.check_every_n_steps={check_every_n_steps} is impossible: use at least 1 "
                           "(1 reads the loss every step)")
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
        if (batch_idx + 1) % self.check_every_n_steps == 0:
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
        # the default last.ckpt callback has no save_last: its file is its (only) top-k one, best_model_path
        kept = [Path(p) for cb in trainer.checkpoint_callbacks
                if (p := getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", ""))]
        kept_msg = f"The last good checkpoint is kept: {kept[0]}." if kept else "No checkpoint was written yet."
        raise EvaError(
            f"the training loss became {what} {where}{lr}. The likely cause is a learning rate that is too "
            f"high: lower model.init_args.lr / the optimiser's lr (eva lr_find suggests one), or the schedule's "
            f"peak. {kept_msg}"
        )
