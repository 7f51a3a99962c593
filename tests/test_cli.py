"""`eva` end to end, by subprocess, as a user runs it."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_eva


def test_fit_writes_checkpoints_and_tensorboard_scalars(tmp_path, tiny_config):
    res = run_eva("fit", "--config", str(tiny_config), "--trainer.max_epochs", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch00") for n in ckpts), ckpts
    assert (run / "config.yaml").exists()
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/acc", "val/loss", "train/acc", "lr"} <= tags, tags
    assert abs(events.Scalars("lr")[0].value - 0.05) < 1e-7  # the optimiser's LR from the config
    assert 0.0 <= events.Scalars("val/acc")[-1].value <= 1.0
    # testing that checkpoint without a logger leaves nothing in the working directory
    before = sorted(p.name for p in tmp_path.iterdir())
    res = run_eva("test", "--config", str(tiny_config), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                  "--trainer.logger", "false", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_help_and_print_config_round_trip(tmp_path, tiny_config):
    top = run_eva("--help", cwd=tmp_path)
    assert top.returncode == 0 and "fit" in top.stdout and "predict" in top.stdout
    fit_help = run_eva("fit", "--help", cwd=tmp_path)
    assert fit_help.returncode == 0 and "--data.batch_size" in fit_help.stdout
    printed = run_eva("fit", "--config", str(tiny_config), "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "class_path: tiny.TinyNet" in printed.stdout and "batch_size: 32" in printed.stdout
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(printed.stdout)
    again = run_eva("fit", "--config", str(resolved), "--print_config", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout == printed.stdout


def test_module_runs_from_a_plain_checkout_without_install(tmp_path):
    """PYTHONPATH=. python -m eva_lightning works (what the GPU machine does)."""
    res = run_eva("fit", "--help", cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0 and "--data.dataset" in res.stdout


def test_progress_bar_redraws_every_few_steps_and_yields_to_the_users_choice(tiny_config, tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

    from eva_lightning.cli import PROGRESS_REFRESH, EvaCLI

    monkeypatch.chdir(tmp_path)

    def bars(*overrides: str) -> list:
        cli = EvaCLI(args=["--config", str(tiny_config), *overrides], run=False)
        return [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]

    (bar,) = bars("--trainer.enable_progress_bar", "true")  # the tiny config turns it off
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == PROGRESS_REFRESH > 1
    assert bars() == []  # no clash with a disabled bar
    (own,) = bars("--trainer.enable_progress_bar", "true", "--trainer.callbacks+=TQDMProgressBar",
                  "--trainer.callbacks.refresh_rate=3")
    assert own.refresh_rate == 3
