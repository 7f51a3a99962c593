"""L1: ``train/l1`` equals λ·Σ|w| over conv/linear weights only (no biases, no BN/GBN parameters)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eva_lightning.assignments.s5 import S5Model

LAMBDA = 1e-3


@pytest.mark.parametrize("norm", ["bn", "gbn"])
def test_logged_l1_is_lambda_times_conv_weight_norm_without_bn(norm):
    torch.manual_seed(0)
    model = S5Model(
        in_channels=1, num_classes=10, norm=norm, virtual_batch_size=4, l1=LAMBDA,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.0),  # weights stay as they were when logged
    )
    with torch.no_grad():  # large norm-layer parameters: counting them would change the sum a lot
        for m in model.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(50.0)
                m.bias.fill_(-20.0)
    convs = [m for m in model.net.modules() if isinstance(m, nn.Conv2d)]
    assert any(c.bias is not None for c in convs)  # the head's bias exists and must not count
    want = LAMBDA * sum(c.weight.abs().sum().item() for c in convs)
    with_norm = want + LAMBDA * sum(
        p.abs().sum().item() for m in model.net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()
    )
    with_biases = want + LAMBDA * sum(c.bias.abs().sum().item() for c in convs if c.bias is not None)

    data = TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    trainer = L.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(data, batch_size=8))

    got = trainer.callback_metrics["train/l1"].item()
    assert got == pytest.approx(want, rel=1e-5)
    assert abs(got - with_norm) > 0.1 * want
    assert got != pytest.approx(with_biases, rel=1e-7)


def test_no_l1_logged_when_lambda_is_zero():
    model = S5Model(in_channels=1, num_classes=10, l1=0.0, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    data = TensorDataset(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    trainer = L.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(data, batch_size=4))
    assert "train/l1" not in trainer.callback_metrics
