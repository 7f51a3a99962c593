"""Tiny networks and callbacks for fast CPU tests: the classes a config names by class path
(``tiny.TinyNet``), importable by subprocess tests through PYTHONPATH."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import nn

from eva_lightning.core.module import ImageClassifier


class TinyNet(ImageClassifier):
    """conv(8) - BN - ReLU - maxpool - conv(num_classes) - GAP."""

    gradcam_layer = "net.0"

    def __init__(self, width: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = nn.Sequential(
            nn.Conv2d(self.in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, self.num_classes, 3, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


class NeverImproves(TinyNet):
    """TinyNet whose validation predictions are all wrong after epoch 0: ``val/acc`` never improves."""

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        if self.current_epoch == 0:
            return super().validation_step(batch, batch_idx)
        wrong = torch.nn.functional.one_hot((y + 1) % self.num_classes, self.num_classes).float()
        self.val_acc.update(wrong, y)
        self.val_loss.update(torch.ones(y.shape[0]))  # val/loss 1.0


class SavesFigures(L.Callback):
    """Stands in for the figure callbacks: PNGs in the run directory at the end of fitting."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = Path(trainer.log_dir)
        img = np.zeros((8, 8, 3), dtype=np.uint8)
        for name in ("curves.png", "misclassified_epoch0.png", "misclassified_epoch1.png", "figures/confusion_matrix.png"):
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(run / name)


class WarnsOnce(L.Callback):
    """A real problem: its warning must not be silenced with the known-harmless ones."""

    def on_fit_start(self, trainer, pl_module) -> None:
        warnings.warn("this is a real problem", UserWarning)


PAUSE_ENV = "EVA_TEST_PAUSE_MARKER"


class PauseForKill(L.Callback):
    """Test helper: mid-epoch, write a marker file and sleep until the test SIGKILLs the process.

    Inactive unless ``$EVA_TEST_PAUSE_MARKER`` is set, so the uninterrupted and the resumed runs
    use the very same configuration as the killed one.
    """

    def __init__(self, epoch: int = 2, batch: int = 3) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        marker = os.environ.get(PAUSE_ENV)
        if marker and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            Path(marker).write_text(str(trainer.global_step))
            time.sleep(120)


SIGTERM_ENV = "EVA_TEST_SIGTERM_AT"


class SigtermAt(L.Callback):
    """Test helper: at the end of training batch ``batch`` of epoch ``epoch``, send this process SIGTERM (as a cluster
    scheduler does before it kills a job). Inactive unless ``$EVA_TEST_SIGTERM_AT`` is set, so the uncut run, the cut
    one and the resumed one share one configuration."""

    def __init__(self, epoch: int = 1, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if os.environ.get(SIGTERM_ENV) and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
