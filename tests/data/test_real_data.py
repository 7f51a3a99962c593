"""Real MNIST (from $EVA_DATA_DIR, e.g. ../shared/data in CI): one epoch on the CPU reaches 97%."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from eva_lightning.core.module import ImageClassifier
from eva_lightning.core.schedules import Schedule
from eva_lightning.data import VisionDataModule, sources
from eva_lightning.data.datasets import MNIST

pytestmark = pytest.mark.real_data


@pytest.fixture
def real_mnist() -> Path:
    root = Path(os.environ.get("EVA_DATA_DIR", "data"))
    if not sources.torchvision_present(MNIST.torchvision, root):
        pytest.skip(f"real MNIST not found under EVA_DATA_DIR={root}")
    return root


class SmallNet(ImageClassifier):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.net = nn.Sequential(
            block(1, 16), block(16, 16), nn.MaxPool2d(2),
            block(16, 32), block(32, 32), nn.MaxPool2d(2),
            block(32, 32), nn.Conv2d(32, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )


def test_small_net_reaches_97_percent_in_one_epoch_on_real_mnist(real_mnist):
    L.seed_everything(0)
    model = SmallNet(
        in_channels=1, lr=0.05, schedule=Schedule(name="onecycle", peak_epoch=0.3, final_div_factor=100),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    )
    dm = VisionDataModule("mnist", data_dir=str(real_mnist), download=False, batch_size=128)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, dm)
    acc = trainer.test(model, dm, verbose=False)[0]["test/acc"]
    assert acc >= 0.97, f"test accuracy {acc:.4f} after one epoch"
