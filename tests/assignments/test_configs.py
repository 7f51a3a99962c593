"""Every config under configs/ parses, builds and trains one fast_dev_run step on tiny synthetic data.

A config whose header shows an ``eva fit --config A --config B`` command is a composition (the S5
steps on configs/s5_base.yaml, the S6 runs on configs/s6_base.yaml): it is tested as that command
composes it. S7-S11 include configs/cifar10_data.yaml through their own ``config:`` key. A file that
comes before the last one in another config's command, or that another config includes
(``*_base.yaml``, ``cifar10_data.yaml``), is only a part of a run.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml

from conftest import CONFIGS, PARTS, ROOT, as_param, config_args, files_read, read_config, write_cifar_jpeg, write_mnist
from eva_lightning.cli import EvaCLI


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


def test_compositions_name_existing_files():
    """Every run's composed command names files that exist; a part is never a run."""
    for config in CONFIGS:
        assert all(p.is_file() for p in files_read(config)), config.name
    assert {p.name for p in PARTS} == {"s5_base.yaml", "s6_base.yaml", "cifar10_data.yaml"}


@pytest.mark.parametrize("config", [as_param(c) for c in CONFIGS])
def test_config_trains_one_step(config, synthetic_roots, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = read_config(config).get("data", {}).get("dataset", "mnist")
    cli = EvaCLI(args=[*config_args(config), "--data.data_dir", str(synthetic_roots[dataset]), *CPU_OVERRIDES], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.state.finished
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    x = torch.zeros(2, cli.datamodule.in_channels, cli.datamodule.image_size, cli.datamodule.image_size)
    cli.model.eval()
    assert cli.model(x).shape == (2, cli.datamodule.num_classes)


REFERENCE_CONFIGS = sorted((ROOT / "lightning_logs" / "reference").glob("*/config.yaml"))


@pytest.mark.parametrize("config", REFERENCE_CONFIGS, ids=[c.parent.name for c in REFERENCE_CONFIGS])
def test_reference_runs_name_model_classes_that_still_import(config):
    """A recorded run's config (and its checkpoints) keep loading after a class is renamed or merged."""
    module, _, name = yaml.safe_load(config.read_text())["model"]["class_path"].rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), name), type)
