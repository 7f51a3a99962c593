"""LR range test: ``eva lr_find`` (Tuner.lr_find) and the ``LRRangeTest`` callback feeding one-cycle."""

from __future__ import annotations

import pytest
import torch

from eva_lightning.callbacks import CurvesFigure, LRRangeTest
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
    lr = finder.suggestion()
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
    assert cli.model.lr == pytest.approx(lr, rel=1e-3)


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
