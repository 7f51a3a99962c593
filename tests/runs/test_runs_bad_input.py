"""Runs that cannot start or that fail early (#26): one clear error, nothing damaged, nothing left behind.

An endless run with a schedule that spans the run, a run root that cannot be written, a run failing
before its first epoch (its empty ``version_N`` goes; one with a checkpoint or a finished epoch
stays), YAML files that do not parse or give a key twice (``eva report`` on a committed run: tests/tools/test_report.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from eva_lightning.cli import EvaCLI
from eva_lightning.core.errors import EvaError


def fit_args(config: Path, *overrides: str) -> list[str]:
    return ["fit", "--config", str(config), "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", *overrides]


# ---------------------------------------------------------------- settings that cannot run


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_endless_run_with_a_schedule_over_the_run(schedule, tiny_config, tmp_path, monkeypatch):
    """``--trainer.max_epochs -1`` with one-cycle was an OverflowError traceback (an infinite step count)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvaError, match=rf"schedule.name={schedule} with trainer.max_epochs=-1: .*set trainer.max_epochs"):
        EvaCLI(args=fit_args(tiny_config, "--trainer.max_epochs=-1", f"--model.init_args.schedule.name={schedule}",
                             "--model.init_args.schedule.peak_epoch=0"))
    assert not (tmp_path / "lightning_logs").exists()


def test_endless_run_with_max_steps_is_fine(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = EvaCLI(args=fit_args(tiny_config, "--trainer.max_epochs=-1", "--trainer.max_steps=4",
                               "--model.init_args.schedule.name=cosine"))
    assert cli.trainer.global_step == 4


def test_run_root_under_a_file(tiny_config, tmp_path, monkeypatch):
    """A run root that cannot be a folder was an OSError traceback from Lightning."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(EvaError, match=r"cannot write the run's files in .*notes.txt/runs/tiny: .*notes.txt is a file, "
                                       r"not a folder; choose another with --trainer.default_root_dir"):
        EvaCLI(args=fit_args(tiny_config, "--trainer.default_root_dir", "notes.txt/runs"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("option", ["--trainer.default_root_dir", "--trainer.logger.init_args.save_dir"])
def test_read_only_run_root(option, tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(EvaError, match=rf"cannot write the run's files in {locked}/runs.*{locked} is read-only"):
            EvaCLI(args=fit_args(tiny_config, option, str(locked / "runs")))
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------- a run that fails early


class FailAt(L.Callback):
    """Raises at the start of training batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int = 0) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            raise RuntimeError("simulated failure")


def fail_fit(config: Path, fail: FailAt, checkpoints: bool = True) -> Path:
    cli = EvaCLI(args=["--config", str(config), "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                       "--trainer.max_epochs=3"], run=False)
    cli.trainer.callbacks.append(fail)
    if not checkpoints:
        cli.trainer.callbacks[:] = [cb for cb in cli.trainer.callbacks if not isinstance(cb, ModelCheckpoint)]
    run = Path(cli.trainer.log_dir).absolute()
    with pytest.raises(RuntimeError, match="simulated failure"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return run


def test_run_failing_before_its_first_epoch_leaves_no_folder(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = fail_fit(tiny_config, FailAt(epoch=0, batch=1))
    assert run == tmp_path / "lightning_logs" / "tiny" / "version_0"
    assert not run.exists() and not run.parent.exists()  # config.yaml and run_info.yaml went with it
    # the next run is version_0 again, not version_1 beside an empty one
    assert fail_fit(tiny_config, FailAt(epoch=0)).name == "version_0"


def test_failed_run_with_a_checkpoint_is_kept(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = fail_fit(tiny_config, FailAt(epoch=1))
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()


def test_failed_run_with_a_finished_epoch_is_kept(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = fail_fit(tiny_config, FailAt(epoch=1), checkpoints=False)
    assert not list(run.rglob("*.ckpt")) and list(run.glob("events.out.tfevents.*"))


# ---------------------------------------------------------------- YAML files


@pytest.mark.parametrize(
    "text, line, key",
    [
        ("trainer:\n  max_epochs: 2\nseed_everything: 3\ntrainer:\n  max_epochs: 3\n", 4, "trainer"),
        ("model:\n  init_args:\n    lr: 0.1\n    l1: 0.0\n    lr: 0.2\n", 5, "lr"),
        ("trainer.max_epochs: 2\ntrainer.max_epochs: 3\n", 2, "trainer.max_epochs"),
    ],
    ids=["top_level", "nested", "dotted"],
)
def test_key_given_twice_is_refused(text, line, key, tiny_config, tmp_path, monkeypatch):
    """YAML parsers keep the last of two equal keys: the first block was dropped without a word."""
    monkeypatch.chdir(tmp_path)
    twice = tmp_path / "sub" / "twice.yaml"
    twice.parent.mkdir()
    twice.write_text(text)
    with pytest.raises(EvaError, match=rf"duplicate key '{key}' in {twice}, line {line} \(first on line \d\)"):
        EvaCLI(args=["--config", str(tiny_config), "--config", "sub/twice.yaml"], run=False)


def test_key_given_twice_in_an_included_file(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text(tiny_config.read_text() + "seed_everything: 2\n")
    (tmp_path / "run.yaml").write_text("config: base.yaml\ntrainer.max_epochs: 2\n")
    with pytest.raises(EvaError, match=rf"duplicate key 'seed_everything' in {tmp_path / 'base.yaml'}, line \d+"):
        EvaCLI(args=["--config", "run.yaml"], run=False)


def test_malformed_yaml_names_the_file_and_line(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("trainer:\n  max_epochs: 2\n   foo: 3\n")
    (tmp_path / "run.yaml").write_text("config: base.yaml\n")
    with pytest.raises(EvaError, match=rf"malformed YAML in {tmp_path / 'base.yaml'}, line 3, column \d+: "
                                       "mapping values are not allowed here"):
        EvaCLI(args=["--config", "run.yaml"], run=False)


def test_eva_prints_one_line_for_a_duplicate_key(tiny_config, tmp_path, monkeypatch, capsys):
    from eva_lightning.entry import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "twice.yaml").write_text("data:\n  batch_size: 8\ndata:\n  batch_size: 16\n")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(tiny_config), "--config", "twice.yaml"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].startswith("error: duplicate key 'data' in ") and "Traceback" not in "".join(err)
