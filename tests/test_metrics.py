"""The epoch metrics ImageClassifier logs once per epoch are exact means over the whole split."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from tiny import TinyNet


def test_val_and_test_metrics_are_sample_weighted_means_over_the_split():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 1, 8, 8, generator=g), torch.randint(0, 4, (50,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 16, 16, 16, 2: a short last batch
    model = TinyNet(num_classes=4, in_channels=1, label_smoothing=0.1)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    val = trainer.validate(model, loader, verbose=False)[0]
    test = trainer.test(model, loader, verbose=False)[0]
    model.eval()
    with torch.no_grad():
        logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=0.1).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    # a mean of the four batch means would weigh the last two images like 16
    assert val["val/loss"] == pytest.approx(loss, rel=1e-5) and test["test/loss"] == pytest.approx(loss, rel=1e-5)
    assert val["val/acc"] == pytest.approx(acc) and test["test/acc"] == pytest.approx(acc)
    # and nothing carries over into the next epoch
    assert trainer.validate(model, loader, verbose=False)[0]["val/loss"] == pytest.approx(loss, rel=1e-5)
