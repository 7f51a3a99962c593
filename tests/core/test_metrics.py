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


class RecordSteps(L.Callback):
    def __init__(self) -> None:
        self.steps: list[tuple[float, int]] = []  # (the loss the step returned, batch size)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append((float(outputs["loss"]), len(batch[1])))


def test_train_loss_and_l1_are_sample_weighted_means_over_the_epoch():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 1, 8, 8, generator=g), torch.randint(0, 4, (50,), generator=g)
    # shuffled: the two epochs' batches, and so their means, differ
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    # lr 0: the weights, and so the L1 penalty, stay as they are; BN still normalises each batch
    torch.manual_seed(0)  # the initial weights, whatever tests ran before (the check below needs them apart)
    model = TinyNet(num_classes=4, in_channels=1, l1=1e-3, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    penalty = float(model.l1_penalty())
    rec = RecordSteps()
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, callbacks=[rec],
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, loader)
    last_epoch = rec.steps[4:]  # 4 steps an epoch: the second epoch alone, nothing carried over
    seen = sum(n for _, n in last_epoch)
    expected = sum((loss - penalty) * n for loss, n in last_epoch) / seen
    both = sum((loss - penalty) * n for loss, n in rec.steps) / (2 * seen)
    assert both != pytest.approx(expected, rel=1e-5)  # else the test could not tell
    logged = trainer.callback_metrics
    assert float(logged["train/loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(logged["train/l1"]) == pytest.approx(penalty, rel=1e-6)
