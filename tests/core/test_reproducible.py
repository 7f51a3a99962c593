"""Same seed, same weights; ``--trainer.deterministic true`` works for every config on CPU; each
run directory records how it was made (``run_info.yaml`` beside LightningCLI's ``config.yaml``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_CONFIG
from conftest import CONFIGS, config_args
from eva_lightning.cli import EvaCLI
from eva_lightning.core.checkpoints import SafeCheckpointIO



@pytest.fixture(autouse=True)
def _restore_determinism_flag():
    """Lightning switches torch's deterministic mode on process-wide; give other tests theirs back."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def _fit(config: Path, *extra: str) -> EvaCLI:
    cli = EvaCLI(args=[*config_args(config), "--trainer.deterministic", "true", *extra], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli


def test_same_seed_same_weights_and_run_info(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "tiny.yaml"  # no seed_everything: the default seed must apply
    config.write_text(TINY_CONFIG.format(data_dir=mnist_dir).replace("seed_everything: 1\n", ""))
    first, second = _fit(config), _fit(config)
    assert torch.are_deterministic_algorithms_enabled()
    assert isinstance(first.trainer.strategy.checkpoint_io, SafeCheckpointIO)  # atomic checkpoint writes
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, shuffling included

    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    assert (run / "config.yaml").exists()
    info = yaml.safe_load((run / "run_info.yaml").read_text())
    assert info["seed"] == "1"
    assert info["versions"]["torch"] == torch.__version__.split("+")[0] or info["versions"]["torch"] == torch.__version__
    assert info["versions"]["lightning"] and info["versions"]["albumentations"]
    assert re.fullmatch(r"[0-9a-f]{40}", info["code"]["commit"]) and isinstance(info["code"]["dirty"], bool)
    assert info["machine"]["cpu"] and info["machine"]["gpus"] == [] and info["machine"]["deterministic"] is True


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_deterministic_mode_runs_every_config_on_cpu(config, tmp_path, monkeypatch):
    """Each network's forward and backward under ``--trainer.deterministic true`` (no op refuses).

    A training step per config is ``tests/assignments/test_configs.py``'s job; here only the ops matter, so a
    batch of zeros goes straight through the configured model.
    """
    monkeypatch.chdir(tmp_path)
    cli = EvaCLI(args=[*config_args(config), "--trainer.deterministic", "true", "--trainer.accelerator", "cpu",
                       "--trainer.devices", "1", "--trainer.precision", "32-true", "--model.init_args.compile", "false",
                       "--data.data_dir", str(tmp_path), "--data.download", "false"], run=False)
    assert torch.are_deterministic_algorithms_enabled()
    dm, model = cli.datamodule, cli.model
    x = torch.zeros(4, dm.in_channels, dm.image_size, dm.image_size)
    model.train()
    loss = model(x).logsumexp(dim=1).mean()
    loss.backward()
    assert torch.isfinite(loss)
