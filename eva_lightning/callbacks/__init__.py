"""Callbacks usable from any config under ``trainer.callbacks`` (images go to TensorBoard and PNG files)."""

from eva_lightning.callbacks.curves import CurvesFigure
from eva_lightning.callbacks.ema import WarmupEMA
from eva_lightning.callbacks.finite_loss import FiniteLossGuard
from eva_lightning.callbacks.images import ConfusionMatrixFigure, GradCAMGrid, MisclassifiedGrid
from eva_lightning.callbacks.lr_range import LRRangeTest
from eva_lightning.callbacks.rng_state import RngState
from eva_lightning.callbacks.whitening import WhiteningInit

__all__ = [
    "ConfusionMatrixFigure", "CurvesFigure", "FiniteLossGuard", "GradCAMGrid", "LRRangeTest", "MisclassifiedGrid",
    "RngState", "WarmupEMA", "WhiteningInit",
]
