"""Lightning conventions users rely on: last.ckpt, default_root_dir, integer batch limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eva_lightning.cli import EvaCLI


def fit(tmp_path, monkeypatch, config, *extra: str) -> EvaCLI:
    monkeypatch.chdir(tmp_path)
    return EvaCLI(args=["fit", "--config", str(config), "--trainer.enable_model_summary", "false", *extra])


def test_last_ckpt_is_the_latest_epoch_when_the_metric_never_improves(tmp_path, monkeypatch, tiny_config):
    cli = fit(tmp_path, monkeypatch, tiny_config, "--model.class_path", "tiny.NeverImproves",
              "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "2")
    assert cli.trainer.current_epoch == 3
    ckpts = tmp_path / "lightning_logs" / "tiny" / "version_0" / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 6  # the third epoch, not the first (the only "improvement")
    for key, value in cli.model.state_dict().items():  # the weights the run ended with
        assert torch.equal(value, last["state_dict"][key]), key
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]  # validation is the test split: nothing "best"


def test_fit_without_a_logger_trains(tmp_path, monkeypatch, tiny_config):
    # Lightning's LearningRateMonitor refuses to start without a logger; eva drops it instead
    cli = fit(tmp_path, monkeypatch, tiny_config, "--trainer.logger", "false", "--trainer.limit_train_batches", "2")
    assert cli.trainer.current_epoch == 1 and cli.trainer.logger is None
    assert not (tmp_path / "lightning_logs").exists()


def write_images(folder) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")


def test_default_root_dir_holds_every_file_of_the_run(tmp_path, monkeypatch, tiny_config):
    root = tmp_path / "runs"
    grid = '[{"class_path": "eva_lightning.callbacks.MisclassifiedGrid", "init_args": {"num_images": 4}}]'
    fit(tmp_path, monkeypatch, tiny_config, "--trainer.default_root_dir", str(root), "--trainer.callbacks", grid)
    run = root / "tiny" / "version_0"
    for name in ("config.yaml", "run_info.yaml", "report.md", "checkpoints/last.ckpt", "misclassified_epoch0.png"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    write_images(tmp_path / "mine")
    EvaCLI(args=["predict", "--config", str(tiny_config), "--trainer.default_root_dir", str(root),
                 "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--data.predict_dir", str(tmp_path / "mine")])
    assert (root / "tiny" / "version_1" / "predictions.csv").is_file()
    # --ckpt_path last looks for the latest run there too
    cli = fit(tmp_path, monkeypatch, tiny_config, "--trainer.default_root_dir", str(root), "--ckpt_path", "last",
              "--trainer.max_epochs", "2")
    assert cli.trainer.current_epoch == 2 and not (root / "tiny" / "version_2").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "lightning_logs").exists()  # nothing in the default place


INT_OPTIONS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
               "overfit_batches", "val_check_interval")


@pytest.mark.parametrize("option", INT_OPTIONS)
@pytest.mark.parametrize("given, expected", [("1", 1), ("3", 3), ("0.5", 0.5), ("1.0", 1.0)])
def test_integer_batch_options_stay_integers(tiny_config, option, given, expected):
    cli = EvaCLI(args=["--config", str(tiny_config), "--trainer.logger", "false", f"--trainer.{option}", given], run=False)
    value = cli.config.trainer[option]
    # an int stays an int (one batch), a float stays a float (a fraction; jsonargparse's ClosedUnitInterval is one)
    assert value == expected and isinstance(value, type(expected)) and isinstance(value, int) == isinstance(expected, int)


def test_limit_val_batches_1_runs_exactly_one_batch(tmp_path, monkeypatch, tiny_config):
    config = tmp_path / "one.yaml"  # once from YAML, once from the command line
    config.write_text(tiny_config.read_text().replace("  max_epochs: 1\n", "  max_epochs: 1\n  limit_val_batches: 1\n"))
    for args in (["--config", str(config)], ["--config", str(tiny_config), "--trainer.limit_val_batches", "1"]):
        cli = fit(tmp_path, monkeypatch, args[1], *args[2:], "--trainer.limit_train_batches", "2",
                  "--trainer.num_sanity_val_steps", "0")
        assert cli.trainer.limit_val_batches == 1
        # 128 synthetic test images in batches of 32: all of them would be 4 batches
        assert cli.trainer.num_val_batches == [1]
        assert cli.trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed == 1
