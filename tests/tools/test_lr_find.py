"""LR range test: ``eva lr_find`` (Tuner.lr_find) and the ``LRRangeTest`` callback feeding one-cycle."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from eva_lightning.callbacks import CurvesFigure, LRRangeTest
from eva_lightning.callbacks.lr_range import suggest_lr, suggestion
from eva_lightning.cli import EvaCLI
from eva_lightning.tools.lr_find import LRFindOptions, main, range_test


def configured(config, *overrides: str) -> EvaCLI:
    """Model, data and trainer the way ``eva`` builds them (hparams hold the schedule as a plain dict)."""
    return EvaCLI(args=["--config", str(config), *overrides], run=False)


def test_range_test_restores_weights_and_suggests(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = configured(tiny_config)
    model = cli.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finder = range_test(cli.trainer, model, cli.datamodule, LRFindOptions(min_lr=1e-5, max_lr=1.0, num_training=20))
    after = model.state_dict()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0, msg=k)
    assert len(finder.results["lr"]) > 12  # crossed the 8-batch epoch
    lr = suggestion(finder, "exponential")
    assert 1e-4 <= lr <= 1.0
    assert model.lr is None  # the tool reports, it does not change the module


def test_eva_lr_find_plot_and_apply(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lr = main(["--config", str(tiny_config), "--lr_find.num_training", "14", "--apply"])
    out = capsys.readouterr().out
    assert f"suggested LR: {lr:.4g}" in out
    assert (tmp_path / "lightning_logs" / "tiny" / "version_0" / "lr_find.png").stat().st_size > 0
    applied = tiny_config.with_name("tiny_lr.yaml")
    cli = EvaCLI(args=["--config", str(applied), "--trainer.logger=false"], run=False)
    assert cli.model.lr == lr  # written in full, not rounded to the 4 digits printed


def test_lr_range_test_callback_feeds_one_cycle(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = configured(
        tiny_config, "--model.init_args.schedule.name=onecycle", "--model.init_args.schedule.peak_epoch=1",
        "--model.init_args.schedule.div_factor=10", "--trainer.max_epochs=2", "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=1",
    )
    finder, curves = LRRangeTest(num_training=14), CurvesFigure()
    cli.trainer.callbacks[:0] = [finder, curves]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    lr = finder.suggested_lr
    assert lr is not None and cli.model.lr == lr
    lrs = [v for _, v in curves.history["lr"]]
    assert len(lrs) == 8  # the real run: 2 epochs x 4 batches, not the range test's steps
    assert lrs[0] == pytest.approx(lr / 10)  # start = peak / div_factor
    assert max(lrs) == pytest.approx(lr)  # the peak is the suggestion, at the first step of epoch 1
    assert lrs.index(max(lrs)) == 4
    assert (tmp_path / "lightning_logs" / "tiny" / "version_0" / "lr_find.png").stat().st_size > 0


# ---------------------------------------------------------------- the suggestion rule


def lightning_rule(lrs, losses, skip_begin=10, skip_end=1) -> float:
    """Lightning 2.6's ``_LRFinder.suggestion()``: steepest slope against the linear LR in every mode."""
    lr, loss = np.asarray(lrs)[skip_begin:-skip_end], np.asarray(losses)[skip_begin:-skip_end]
    return float(lr[np.argmin(np.gradient(loss, lr))])


def test_suggestion_exponential_is_steepest_against_log_lr():
    # Lightning's exponential ladder; loss = f(log lr) with its steepest fall exactly at lrs[60] (0.0107)
    lrs = 1e-5 * (1.0 / 1e-5) ** (np.arange(100) / 99)
    target = lrs[60]
    losses = 2.3 - np.tanh((np.log10(lrs) - np.log10(target)) / 0.8)
    i = suggest_lr(lrs.tolist(), losses.tolist(), "exponential")
    assert lrs[i] == target
    # the linear-LR slope is the log-LR slope / LR: it lands far below (Lightning #21141)
    assert lightning_rule(lrs, losses) < target / 10


def test_suggestion_linear_is_steepest_against_lr():
    lrs = np.linspace(1e-3, 1.0, 100)
    target = lrs[30]
    losses = 2.3 - np.tanh((lrs - target) / 0.2)
    i = suggest_lr(lrs.tolist(), losses.tolist(), "linear")
    assert lrs[i] == target
    # against log LR the slope is LR x dloss/dLR, pulled towards larger LRs: the mode matters
    assert lrs[suggest_lr(lrs.tolist(), losses.tolist(), "exponential")] > target + 0.05


def test_suggestion_skips_ends_and_non_finite_losses():
    lrs = np.geomspace(1e-4, 1.0, 30)
    losses = np.linspace(3.0, 1.0, 30)
    losses[:10] = np.linspace(10.0, 3.0, 10)  # a steep start (the smoothing settling) is skipped
    losses[20] = np.nan
    losses[-1] = -100.0  # the last point is skipped
    i = suggest_lr(lrs.tolist(), losses.tolist(), "exponential")
    assert 10 <= i < 29 and i != 20
    assert suggest_lr(lrs[:11].tolist(), losses[:11].tolist(), "exponential") is None  # too few points


def test_range_test_callback_uses_the_log_lr_rule(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = configured(tiny_config, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1")
    finder = LRRangeTest(num_training=20)
    cli.trainer.callbacks[:0] = [finder]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    results = finder.optimal_lr.results
    assert finder.suggested_lr == results["lr"][suggest_lr(results["lr"], results["loss"], "exponential")]
    assert cli.model.lr == finder.suggested_lr


# ---------------------------------------------------------------- --apply


class RecordLR(L.Callback):
    """The LR of the optimiser's first group at every training step of the real run."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_applied_config_fits_with_the_suggested_lr(tiny_config, tmp_path, monkeypatch, caplog):
    """The copy keeps the config's LRRangeTest; fitting it uses exactly the suggested LR, not a new test's."""
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(tiny_config.read_text())
    data["trainer"]["callbacks"] = [
        {"class_path": "eva_lightning.callbacks.LRRangeTest", "init_args": {"num_training": 14, "max_lr": 0.5}}
    ]
    config = tmp_path / "tiny_range.yaml"
    config.write_text(yaml.safe_dump(data))
    lr = main(["--config", str(config), "--lr_find.num_training", "14", "--apply"])
    applied = tmp_path / "tiny_range_lr.yaml"
    assert yaml.safe_load(applied.read_text())["config"] == config.name  # includes it: the LRRangeTest comes with it

    cli = EvaCLI(args=["--config", str(applied), "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"], run=False)
    range_test_cb = next(cb for cb in cli.trainer.callbacks if isinstance(cb, LRRangeTest))
    record = RecordLR()
    cli.trainer.callbacks.append(record)
    with caplog.at_level("INFO", logger="eva_lightning.callbacks.lr_range"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert range_test_cb.suggested_lr is None  # it skipped itself
    assert "LRRangeTest: skipped, model.lr=" in caplog.text
    assert record.lrs == [lr, lr, lr]  # constant schedule: every step at exactly the suggestion
