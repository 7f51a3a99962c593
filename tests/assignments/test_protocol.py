"""Evaluation protocol: nothing is chosen on the test split.

Validation is the test split (``data.val_split == 0``): no best checkpoint, ``last.ckpt`` is the
model of record. A held-out split (``val_split > 0``): best-by-validation checkpoints and plateau
schedules use it, and fit ends by testing the final weights on the test split.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eva_lightning.cli import EvaCLI
from conftest import ROOT, read_config, logged



def fit(tmp_path, monkeypatch, config, *extra: str) -> EvaCLI:
    monkeypatch.chdir(tmp_path)
    return EvaCLI(args=["fit", "--config", str(config), "--trainer.enable_model_summary", "false",
                        "--model.class_path", "tiny.NeverImproves", "--trainer.max_epochs", "3",
                        "--trainer.limit_train_batches", "2", *extra])


def scalars(run: Path) -> dict[str, dict[int, float]]:
    return logged(run)


def test_no_best_checkpoint_when_validation_is_the_test_split(tmp_path, monkeypatch, tiny_config):
    cli = fit(tmp_path, monkeypatch, tiny_config)
    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert all(cb.monitor is None for cb in cli.trainer.checkpoint_callbacks)  # nothing selects on val (= test)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert not any(tag.startswith("test/") for tag in scalars(run))  # val/* already are the test split


def test_held_out_split_keeps_best_by_validation_and_tests_the_final_weights(tmp_path, monkeypatch, tiny_config, capsys):
    cli = fit(tmp_path, monkeypatch, tiny_config, "--data.val_split", "0.25")
    assert len(cli.datamodule.val_set) == 64 and len(cli.datamodule.test_set) == 128  # 256 train, 128 test images
    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(files) == 2 and "last.ckpt" in files
    best = run / "checkpoints" / next(f for f in files if f.startswith("best-"))
    # NeverImproves: epoch 0 is the only epoch that can be best on the held-out split
    assert best.name.startswith("best-epoch00-") and torch.load(best, weights_only=True)["epoch"] == 0
    assert Path(cli.trainer.checkpoint_callback.best_model_path).resolve() == best.resolve()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2

    logged = scalars(run)
    assert list(logged["test/acc"]) == list(logged["test/loss"]) == [6]  # once, after the last step
    test_acc = logged["test/acc"][6]
    # the final weights (last.ckpt), not the best epoch's, evaluated on the test split
    monkeypatch.chdir(tmp_path)
    check = EvaCLI(args=["test", "--config", str(tiny_config), "--trainer.logger", "false",
                         "--model.class_path", "tiny.NeverImproves",
                         "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert check.trainer.callback_metrics["test/acc"].item() == pytest.approx(test_acc, abs=1e-6)
    assert "test/acc" in capsys.readouterr().out  # Lightning's results table on the console
    assert "test/acc" in (run / "report.md").read_text()


def test_s10_plateau_monitors_a_held_out_split_of_5000_images():
    config = read_config(ROOT / "configs" / "s10.yaml")
    assert config["model"]["init_args"]["schedule"]["name"] == "plateau"
    assert config["data"]["val_split"] * 50_000 == 5_000  # of CIFAR-10's 50,000 training images
