"""EvaTrainer's ``precision: auto``: bf16 autocast only where the hardware computes bf16 natively."""

from __future__ import annotations

import logging

import pytest
import torch

from eva_lightning.core import trainer as trainer_module
from eva_lightning.core.trainer import EvaTrainer, auto_precision

NO_BF16 = {"amx_bf16": False, "avx512_bf16": False, "amx_tile": False}


@pytest.mark.parametrize("caps, expected", [
    (NO_BF16, "32-true"),
    (NO_BF16 | {"amx_bf16": True, "amx_tile": True}, "bf16-mixed"),
    (NO_BF16 | {"avx512_bf16": True}, "bf16-mixed"),
])
def test_auto_precision_on_a_cpu_follows_its_bf16_hardware(monkeypatch, caplog, caps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    with caplog.at_level(logging.INFO, logger=trainer_module.__name__):
        trainer = EvaTrainer(precision="auto", accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False)
    assert trainer.precision == expected
    assert f"trainer.precision=auto: {expected}" in caplog.text  # the run says what it chose and why


def test_auto_precision_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert auto_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert auto_precision("gpu") == "16-mixed"
    # an explicit CPU run never gets a GPU precision: it follows the CPU's bf16 hardware
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: NO_BF16)
    assert auto_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: NO_BF16 | {"avx512_bf16": True})
    assert auto_precision("cpu") == "bf16-mixed"


def test_explicit_precision_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: NO_BF16)
    trainer = EvaTrainer(precision="bf16-mixed", accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    assert trainer.precision == "bf16-mixed"
