"""LRRangeTest: Lightning's LR finder at fit start, with eva's suggestion (:func:`suggest_lr`) as ``model.lr``."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import LearningRateFinder

from eva_lightning.runs.record import publish
from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.core.errors import EvaError

log = logging.getLogger(__name__)


def suggest_lr(
    lrs: Sequence[float], losses: Sequence[float], mode: str = "exponential", skip_begin: int = 10, skip_end: int = 1
) -> int | None:
    """Index into ``lrs`` of the steepest fall of the smoothed ``losses`` against log LR (``mode`` exponential) or LR
    (linear), leaving out the first ``skip_begin`` points (the smoothing still settles) and the last ``skip_end`` (the
    loss diverges); None when fewer than 2 usable points are left. Not Lightning 2.6's ``suggestion()``, which uses the
    linear LR in both modes (why: docs/internals.md)."""
    if mode not in ("exponential", "linear"):
        raise ValueError(f"mode must be 'exponential' or 'linear', got {mode!r}")
    if len(lrs) != len(losses):
        raise ValueError(f"{len(lrs)} LRs but {len(losses)} losses")
    idx = np.arange(len(lrs))[skip_begin : len(lrs) - skip_end]
    lr, loss = np.asarray(lrs, dtype=np.float64)[idx], np.asarray(losses, dtype=np.float64)[idx]
    keep = np.isfinite(loss) & (lr > 0)
    idx, lr, loss = idx[keep], lr[keep], loss[keep]
    if len(idx) < 2:
        return None
    x = np.log(lr) if mode == "exponential" else lr
    return int(idx[np.argmin(np.gradient(loss, x))])


def suggestion(finder, mode: str) -> float | None:
    """The LR :func:`suggest_lr` picks from a Lightning LR finder's ``results``, or None (also without a finder)."""
    i = None if finder is None else suggest_lr(finder.results["lr"], finder.results["loss"], mode)
    return None if i is None else float(finder.results["lr"][i])


def lr_plot(finder, title: str, mode: str):
    """The finder's loss-vs-LR plot with the suggestion (:func:`suggest_lr`) marked and written in the legend."""
    lrs, losses = finder.results["lr"], finder.results["loss"]
    i = suggest_lr(lrs, losses, mode)
    fig = finder.plot(suggest=False)  # Lightning's own marker would show its linear-LR rule
    ax = fig.axes[0]
    if i is not None:
        ax.plot(lrs[i], losses[i], markersize=10, marker="o", color="red")
        ax.axvline(lrs[i], color="red", linestyle="--", linewidth=1, label=f"suggested LR {lrs[i]:.3g}")
        ax.legend()
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def check_sweep(min_lr: float, max_lr: float, num_training: int, mode: str, early_stop_threshold: float | None,
                prefix: str) -> None:
    """Raise an :class:`EvaError` for a sweep that cannot run; ``prefix`` names the options (``--lr_find.``)."""
    if mode not in ("exponential", "linear"):
        raise EvaError(f"{prefix}mode={mode!r}: use exponential or linear")
    if not 0 < min_lr < max_lr:
        raise EvaError(f"{prefix}min_lr={min_lr:g}, {prefix}max_lr={max_lr:g}: the sweep runs upwards from min_lr "
                       "to max_lr, so it needs 0 < min_lr < max_lr (e.g. 1e-5 and 1)")
    if num_training < 2:
        raise EvaError(f"{prefix}num_training={num_training}: the sweep needs at least 2 steps (e.g. 100)")
    if early_stop_threshold is not None and early_stop_threshold <= 0:
        raise EvaError(f"{prefix}early_stop_threshold={early_stop_threshold:g}: use a positive factor (e.g. 4) or null")


#: the loggers of Lightning's notices about the range test's own save-and-restore, and how those notices start
_RESTORE_LOGGERS = ("lightning.pytorch.trainer.connectors.checkpoint_connector", "lightning.pytorch.utilities.rank_zero")
_RESTORE_NOTICES = ("`weights_only` was not set", "Found current_model_state")


@contextmanager
def scratch_checkpoint(trainer: L.Trainer, num_training: int) -> Iterator[None]:
    """The range test's ``.lr_find_<uuid>.ckpt`` in a temporary folder, not ``default_root_dir`` (a killed test left it
    in the working directory), its notices silenced; ``max_epochs`` raised: the test may cross epochs."""
    saved, max_epochs = trainer._default_root_dir, trainer.fit_loop.max_epochs  # (no public setter of the dir)
    with tempfile.TemporaryDirectory(prefix="eva_lr_find_") as scratch:
        def quiet(record: logging.LogRecord) -> bool:
            return scratch not in str(record.msg) and not str(record.msg).startswith(_RESTORE_NOTICES)

        loggers = [logging.getLogger(name) for name in _RESTORE_LOGGERS]
        for logger in loggers:
            logger.addFilter(quiet)
        trainer._default_root_dir, trainer.fit_loop.max_epochs = scratch, max(max_epochs or 1, num_training)
        try:
            yield
        finally:
            trainer._default_root_dir, trainer.fit_loop.max_epochs = saved, max_epochs
            for logger in loggers:
                logger.removeFilter(quiet)


@batch_hooks_only_where_used
class LRRangeTest(LearningRateFinder):
    """LR range test at the start of ``fit``; its suggestion (:func:`suggest_lr`) becomes ``model.lr``.

    ``model.lr`` is the optimiser's LR (a one-cycle's peak); optimiser and schedule are rebuilt from it. The plot
    goes to ``lr_find.png`` and TensorBoard image ``lr_find``. Skipped when ``model.lr`` is set (an explicit LR wins,
    e.g. the copy ``eva lr_find --apply`` writes), under ``fast_dev_run`` and when resuming.

    Args:
        min_lr: smallest LR tried.
        max_lr: largest LR tried.
        num_training: steps of the test (one LR each).
        mode: ``exponential`` or ``linear`` LR steps.
        early_stop_threshold: stop when the loss exceeds this multiple of the best loss (None: never).
    """

    def __init__(self, min_lr: float = 1e-5, max_lr: float = 1.0, num_training: int = 100, mode: str = "exponential",
                 early_stop_threshold: float | None = 4.0) -> None:
        check_sweep(min_lr, max_lr, num_training, mode, early_stop_threshold, "LRRangeTest ")
        # update_attr=False: Lightning would set model.lr from its own suggestion(); ours is set below
        super().__init__(min_lr=min_lr, max_lr=max_lr, num_training_steps=num_training, mode=mode,
                         early_stop_threshold=early_stop_threshold, update_attr=False)
        self.num_training, self.mode = num_training, mode
        self.suggested_lr: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:
            log.info("LRRangeTest: skipped under fast_dev_run; training uses lr=%s", pl_module.lr)
            return
        if trainer.ckpt_path:  # resuming: the checkpoint's optimiser and schedule state carry the LR
            log.info("LRRangeTest: skipped when resuming from %s; the checkpoint's LR schedule continues", trainer.ckpt_path)
            return
        if pl_module.lr is not None:
            log.info("LRRangeTest: skipped, model.lr=%s is set; training uses it", pl_module.lr)
            return
        with scratch_checkpoint(trainer, self.num_training):
            self.lr_find(trainer, pl_module)
        finder = self.optimal_lr
        self.suggested_lr = suggestion(finder, self.mode)
        if self.suggested_lr is None:
            log.warning("LRRangeTest: no suggestion (too few points); training keeps the optimiser's LR")
            return
        pl_module.lr = self.suggested_lr
        # the schedule was built from the old LR before fit start: build optimiser and schedule again
        trainer.strategy.setup_optimizers(trainer)
        schedule, peak = getattr(pl_module, "schedule", None), ""
        if schedule is not None and schedule.name == "onecycle":
            start = self.suggested_lr / schedule.div_factor
            peak = f" as the one-cycle peak (start {start:.4g} = peak/{schedule.div_factor:g})"
        log.info("LRRangeTest: using LR %.4g from the range test%s", self.suggested_lr, peak)
        if trainer.is_global_zero:
            title = f"LR range test: suggested {self.suggested_lr:.3g}"
            publish(lr_plot(finder, title, self.mode), trainer, "lr_find", "lr_find.png")
