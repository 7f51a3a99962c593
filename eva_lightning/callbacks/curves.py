"""CurvesFigure: train/val loss and accuracy per epoch, and the LR per step, in one figure at fit end."""

from __future__ import annotations

import lightning as L
from matplotlib import pyplot as plt

from eva_lightning.runs.record import publish
from eva_lightning.callbacks.hooks import batch_hooks_only_where_used

METRICS = ("train/loss", "val/loss", "train/acc", "val/acc")


@batch_hooks_only_where_used
class CurvesFigure(L.Callback):
    """Records the epoch metrics as logged (``history``: ``{tag: [(epoch, value), ...]}``, ``lr`` per fractional
    epoch) and draws them at fit end as ``curves.png`` and TensorBoard image ``curves``."""

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[float, float]]] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.history = {tag: [] for tag in (*METRICS, "lr")}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.optimizers and trainer.num_training_batches:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.history["lr"].append((trainer.current_epoch + batch_idx / trainer.num_training_batches, float(lr)))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # runs after this epoch's validation, so both train/* and val/* epoch means are in callback_metrics
        for tag in METRICS:
            value = trainer.callback_metrics.get(tag)
            if value is not None:
                self.history[tag].append((trainer.current_epoch, float(value)))

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not any(self.history.get(t) for t in METRICS):
            return
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, title in zip(axes, ("loss", "acc", "learning rate")):
            ax.set(xlabel="epoch", title=title)
            ax.grid(alpha=0.3)
        for ax, kind in zip(axes[:2], ("loss", "acc")):
            for stage in ("train", "val"):
                if points := self.history[f"{stage}/{kind}"]:
                    ax.plot(*zip(*points), marker="o", label=stage)
            ax.legend()
        if self.history["lr"]:
            axes[2].plot(*zip(*self.history["lr"]))
        fig.tight_layout()
        publish(fig, trainer, "curves", "curves.png")
