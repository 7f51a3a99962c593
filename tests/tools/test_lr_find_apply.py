"""``eva lr_find``: ``--apply`` on every kind of config (plain, composed from a base, with an LRRangeTest),
a sweep that cannot run, and nothing left behind (no temporary checkpoint, no ``weights_only`` notice)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from conftest import CONFIGS, TINY_CONFIG, as_param, config_args, read_config, write_cifar_jpeg, write_mnist
from eva_lightning.callbacks import LRRangeTest
from eva_lightning.cli import EvaCLI
from eva_lightning.core.errors import EvaError
from eva_lightning.tools.lr_find import apply_lr, main

LR = 0.0123456789012345  # more digits than any print: the file must hold it exactly

CPU_ONE_STEP = [
    "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
    "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false", "--model.init_args.compile", "false",
    "--data.batch_size", "8", "--data.num_workers", "0", "--data.download", "false",
]


class RecordLR(L.Callback):
    """The LR of the optimiser's first group at every training step."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def fit(config: Path, *overrides: str) -> tuple[EvaCLI, RecordLR]:
    cli = EvaCLI(args=["--config", str(config), *overrides], run=False)
    record = RecordLR()
    cli.trainer.callbacks.append(record)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, record


@pytest.fixture(scope="module")
def synthetic_roots(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {"mnist": write_mnist(root / "mnist", n_train=64, n_test=32), "cifar10": write_cifar_jpeg(root / "cifar")}


@pytest.mark.parametrize("config", [as_param(c) for c in CONFIGS])
def test_applied_config_of_every_run_trains_with_the_lr(config, synthetic_roots, tmp_path, monkeypatch):
    """The written file includes the config (its own includes too) and sets only the LR: the S4, S5 step
    and S6 configs, composed from a base, used to lose everything but ``model: {lr: ...}``."""
    monkeypatch.chdir(tmp_path)
    assert len(config_args(config)) == 2, "a run is one file (its base comes through its config: key)"
    applied = apply_lr(config, LR, tmp_path / f"{config.stem}_lr.yaml")
    dataset = read_config(config).get("data", {}).get("dataset", "mnist")
    cli, record = fit(applied, "--data.data_dir", str(synthetic_roots[dataset]), *CPU_ONE_STEP)
    assert cli.trainer.state.finished and torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert cli.model.lr == LR
    assert type(cli.model).__name__ == read_config(config)["model"]["class_path"].rsplit(".", 1)[1]
    assert sum(p.numel() for g in cli.trainer.optimizers[0].param_groups for p in g["params"]) > 0
    assert record.lrs == [LR]  # fast_dev_run holds a schedule's LR at its peak: the suggestion


# the tiny config with a width of its own, which the run composed on it overrides
BASE = TINY_CONFIG.replace("  init_args:\n    optimizer:", "  init_args:\n    width: 6\n    optimizer:")
assert "width: 6" in BASE


@pytest.mark.parametrize("range_test", [False, True], ids=["composed", "composed_with_LRRangeTest"])
def test_lr_find_apply_then_fit_of_a_composed_config(range_test, mnist_dir, tmp_path, monkeypatch, caplog):
    """As configs/s4.yaml on configs/s5_small.yaml: a base with the model, a run naming it in its config key."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text(BASE.format(data_dir=mnist_dir))
    run = "config: base.yaml\ntrainer.max_epochs: 1\nmodel.init_args.width: 4\n"
    if range_test:
        run += ("trainer.callbacks:\n  - class_path: eva_lightning.callbacks.LRRangeTest\n"
                "    init_args: {num_training: 14, max_lr: 0.5}\n")
    (tmp_path / "run.yaml").write_text(run)
    lr = main(["--config", "run.yaml", "--lr_find.num_training", "14", "--apply"])
    applied = tmp_path / "run_lr.yaml"
    assert yaml.safe_load(applied.read_text()) == {"config": "run.yaml", "model.init_args.lr": lr}

    with caplog.at_level("INFO", logger="eva_lightning.callbacks.lr_range"):
        cli, record = fit(applied, "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1")
    assert cli.model.net[0].out_channels == 4  # the run's own key and its base both came through
    assert record.lrs == [lr, lr, lr]
    if range_test:
        assert next(cb for cb in cli.trainer.callbacks if isinstance(cb, LRRangeTest)).suggested_lr is None
        assert "LRRangeTest: skipped, model.lr=" in caplog.text


def test_apply_with_several_configs_says_how_to_train(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "longer.yaml").write_text("trainer.max_epochs: 3\n")
    lr = main(["--config", str(tiny_config), "--config", "longer.yaml", "--lr_find.num_training", "14", "--apply"])
    assert f"train with: eva fit --config {tiny_config} --config longer_lr.yaml" in capsys.readouterr().out
    cli = EvaCLI(args=["--config", str(tiny_config), "--config", "longer_lr.yaml", "--trainer.logger=false"], run=False)
    assert cli.model.lr == lr and cli.trainer.max_epochs == 3


def test_apply_refuses_to_overwrite_the_config(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = tiny_config.read_text()
    with pytest.raises(EvaError, match="is the config itself"):
        main(["--config", str(tiny_config), "--lr_find.num_training", "14", "--apply",
              "--lr_find.apply_to", str(tiny_config)])
    assert tiny_config.read_text() == before


@pytest.mark.parametrize("bounds", [("0.1", "0.001"), ("0.01", "0.01"), ("0", "1")], ids=["above", "equal", "zero"])
def test_sweep_bounds_must_go_upwards(bounds, tiny_config, tmp_path, monkeypatch):
    """``min_lr`` above ``max_lr`` used to sweep downwards and suggest an LR with exit 0."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvaError, match=r"--lr_find.min_lr=.*--lr_find.max_lr=.*needs 0 < min_lr < max_lr"):
        main(["--config", str(tiny_config), "--lr_find.min_lr", bounds[0], "--lr_find.max_lr", bounds[1]])
    assert not (tmp_path / "lightning_logs").exists()


def test_diverging_sweep_names_the_cause(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvaError, match=r"the loss diverged after \d+ steps .*lower --lr_find.max_lr"):
        main(["--config", str(tiny_config), "--lr_find.num_training", "14", "--lr_find.max_lr", "1e6"])


def test_range_test_leaves_no_checkpoint_and_prints_no_weights_only_notice(tiny_config, tmp_path, monkeypatch,
                                                                            lightning_log):
    """Lightning saves the model before the sweep and loads it back after: the file went to the working
    directory (a killed test left it there) and the save logged "`weights_only` was not set"."""
    monkeypatch.chdir(tmp_path)
    saved: list[Path] = []
    save = Trainer.save_checkpoint

    def spy(self, filepath, *args, **kwargs):
        saved.append(Path(filepath))
        assert Path(filepath).parent != tmp_path  # not in the working directory, even while it exists
        return save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(Trainer, "save_checkpoint", spy)
    main(["--config", str(tiny_config), "--lr_find.num_training", "14"])
    assert len(saved) == 1 and not saved[0].exists() and not saved[0].parent.exists()
    assert not list(tmp_path.glob(".lr_find*")) and not list(tmp_path.rglob("*.ckpt"))
    assert "weights_only" not in lightning_log.text
    assert ".lr_find_" not in lightning_log.text
