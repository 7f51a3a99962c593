"""Every config under configs/ parses, builds and trains one fast_dev_run step on tiny synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import write_cifar_jpeg, write_mnist
from eva_lightning.cli import EvaCLI

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))

# CPU-safe overrides: GPU-only switches off, tiny batches, one step.
CPU_OVERRIDES = [
    "--trainer.fast_dev_run", "true",
    "--trainer.accelerator", "cpu",
    "--trainer.devices", "1",
    "--trainer.precision", "32-true",
    "--trainer.enable_progress_bar", "false",
    "--model.init_args.compile", "false",
    "--data.batch_size", "8",
    "--data.num_workers", "0",
    "--data.download", "false",
]


@pytest.fixture(scope="module")
def synthetic_roots(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {"mnist": write_mnist(root / "mnist", n_train=64, n_test=32), "cifar10": write_cifar_jpeg(root / "cifar")}


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_trains_one_step(config, synthetic_roots, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = (yaml.safe_load(config.read_text()).get("data") or {}).get("dataset", "mnist")
    cli = EvaCLI(args=["--config", str(config), "--data.data_dir", str(synthetic_roots[dataset]), *CPU_OVERRIDES], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.state.finished
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    x = torch.zeros(2, cli.datamodule.in_channels, cli.datamodule.image_size, cli.datamodule.image_size)
    cli.model.eval()
    assert cli.model(x).shape == (2, cli.datamodule.num_classes)
