"""LRRangeTest: Lightning's LR finder at fit start, feeding ``model.lr`` (the one-cycle peak)."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import LearningRateFinder

from eva_lightning.analysis.figures import publish

log = logging.getLogger(__name__)


def lr_plot(finder, title: str):
    """The finder's loss-vs-LR plot with the suggestion marked and written in the legend."""
    suggestion = finder.suggestion()
    fig = finder.plot(suggest=True)
    ax = fig.axes[0]
    if suggestion is not None:
        ax.axvline(suggestion, color="red", linestyle="--", linewidth=1, label=f"suggested LR {suggestion:.3g}")
        ax.legend()
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


class LRRangeTest(LearningRateFinder):
    """LR range test at the start of ``fit``; its suggestion becomes ``model.lr``.

    ``ImageClassifier`` uses ``model.lr`` as the optimiser's LR, which the one-cycle schedule
    takes as its peak (start = peak / div_factor). The optimiser and schedule are built again
    after the test so both come from the suggestion. The loss-vs-LR plot is saved as
    ``lr_find.png`` in the run dir and logged as TensorBoard image ``lr_find``.

    Args:
        min_lr: smallest LR tried.
        max_lr: largest LR tried.
        num_training: steps of the test (one LR each, exponentially spaced).
        mode: ``exponential`` or ``linear`` LR steps.
        early_stop_threshold: stop when the loss exceeds this multiple of the best loss (None: never).
    """

    def __init__(
        self,
        min_lr: float = 1e-5,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
    ) -> None:
        super().__init__(
            min_lr=min_lr,
            max_lr=max_lr,
            num_training_steps=num_training,
            mode=mode,
            early_stop_threshold=early_stop_threshold,
            update_attr=True,
            attr_name="lr",
        )
        self.suggested_lr: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:
            log.info("LRRangeTest: skipped under fast_dev_run; training uses lr=%s", pl_module.lr)
            return
        if trainer.ckpt_path:  # resuming: the checkpoint's optimiser and schedule state carry the LR
            log.info("LRRangeTest: skipped when resuming from %s; the checkpoint's LR schedule continues", trainer.ckpt_path)
            return
        before = pl_module.lr
        # the test stops after num_training steps but also at max_epochs: let it cross epochs on small data
        max_epochs = trainer.fit_loop.max_epochs
        trainer.fit_loop.max_epochs = max(max_epochs or 1, self._num_training_steps)
        try:
            self.lr_find(trainer, pl_module)
        finally:
            trainer.fit_loop.max_epochs = max_epochs
        finder = self.optimal_lr
        self.suggested_lr = finder.suggestion() if finder is not None else None
        if self.suggested_lr is None:
            log.warning("LRRangeTest: no suggestion (too few points); training keeps lr=%s", before)
            return
        # the schedule was built from the old LR before fit start: build optimiser and schedule again
        trainer.strategy.setup_optimizers(trainer)
        schedule = getattr(pl_module, "schedule", None)
        if schedule is not None and schedule.name == "onecycle":
            log.info(
                "LRRangeTest: using LR %.4g from the range test as the one-cycle peak (start %.4g = peak/%g)",
                self.suggested_lr, self.suggested_lr / schedule.div_factor, schedule.div_factor,
            )
        else:
            log.info("LRRangeTest: using LR %.4g from the range test (was %s)", self.suggested_lr, before)
        if trainer.is_global_zero:
            publish(lr_plot(finder, f"LR range test: suggested {self.suggested_lr:.3g}"), trainer, "lr_find", "lr_find.png")
