"""Every config under configs/ parses, builds and trains one fast_dev_run step on tiny synthetic data.

A config whose header shows an ``eva fit --config A --config B`` command is a composition (the S5
steps on configs/s5_base.yaml): it is tested as that command composes it. ``*_base.yaml`` files are
only parts of such compositions.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import write_cifar_jpeg, write_mnist
from eva_lightning.cli import EvaCLI

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.stem.endswith("_base"))


def config_chain(config: Path) -> list[Path]:
    """The config files the header's ``eva fit --config ...`` command composes, in order (else just ``config``)."""
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        if "eva fit" in line:
            command = re.search(r"eva fit((?:\s+--config\s+\S+)+)", line)
            chain = [ROOT / p for p in re.findall(r"--config\s+(\S+)", command.group(1))] if command else []
            if config in chain:
                return chain
    return [config]


def config_args(config: Path) -> list[str]:
    return [arg for path in config_chain(config) for arg in ("--config", str(path))]

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
    datasets = [(yaml.safe_load(p.read_text()).get("data") or {}).get("dataset") for p in config_chain(config)]
    dataset = next((d for d in reversed(datasets) if d), "mnist")
    cli = EvaCLI(args=[*config_args(config), "--data.data_dir", str(synthetic_roots[dataset]), *CPU_OVERRIDES], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.state.finished
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    x = torch.zeros(2, cli.datamodule.in_channels, cli.datamodule.image_size, cli.datamodule.image_size)
    cli.model.eval()
    assert cli.model(x).shape == (2, cli.datamodule.num_classes)
