"""``eva compare``: two tiny runs → one figure and a best/final table matching the event files."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from eva_lightning.analysis.compare import compare, main, read_run
from eva_lightning.errors import EvaError


def write_run(root: Path, name: str, acc: list[float], loss: list[float], steps_per_epoch: int = 5) -> Path:
    """Epoch metrics the way Lightning logs them: at step = global step, with an ``epoch`` scalar."""
    logger = TensorBoardLogger(save_dir=root, name=name, default_hp_metric=False)
    for epoch, (a, l) in enumerate(zip(acc, loss)):
        step = (epoch + 1) * steps_per_epoch - 1
        logger.log_metrics({"val/acc": a, "val/loss": l, "epoch": epoch}, step=step)
        logger.log_metrics({"train/loss_step": l + 0.1, "epoch": epoch}, step=step - 2)
    logger.finalize("success")
    return root / name


def test_compare_two_runs(tmp_path, capsys):
    a = write_run(tmp_path, "bn", acc=[0.5, 0.8, 0.7], loss=[1.0, 0.4, 0.6])
    b = write_run(tmp_path, "gbn", acc=[0.6, 0.65, 0.9], loss=[0.9, 0.8, 0.3])
    out = tmp_path / "fig" / "compare.png"
    results = compare([a, b], ["val/loss", "val/acc"], out)
    with Image.open(out) as im:
        assert im.size[0] > 2 * im.size[1] / 1.5  # two panels side by side
    by = {(r.run, r.metric): r for r in results}
    # best values equal what the event files hold
    for run_dir, name in ((a, "bn/version_0"), (b, "gbn/version_0")):
        events = next((run_dir / "version_0").glob("events.out.tfevents.*"))
        acc = EventAccumulator(str(events))
        acc.Reload()
        values = {tag: [e.value for e in acc.Scalars(tag)] for tag in ("val/acc", "val/loss")}
        assert by[(name, "val/acc")].best == pytest.approx(max(values["val/acc"]))
        assert by[(name, "val/loss")].best == pytest.approx(min(values["val/loss"]))
        assert by[(name, "val/acc")].final == pytest.approx(values["val/acc"][-1])
    assert by[("bn/version_0", "val/acc")].best_epoch == 1
    assert by[("gbn/version_0", "val/loss")].best_epoch == 2

    main([str(a), str(b), "--metrics", "val/acc", "--out", str(tmp_path / "acc.png")])
    table = capsys.readouterr().out
    assert "| bn/version_0 | val/acc | 0.8000 | 1 | 0.7000 | 2 |" in table
    assert "| gbn/version_0 | val/acc | 0.9000 | 2 | 0.9000 | 2 |" in table
    assert (tmp_path / "acc.png").stat().st_size > 0


def test_newest_version_and_errors(tmp_path):
    write_run(tmp_path, "run", acc=[0.1], loss=[2.0])
    write_run(tmp_path, "run", acc=[0.2, 0.3], loss=[1.5, 1.0])
    run = read_run(tmp_path / "run")
    assert run.name == "run/version_1"
    assert run.scalars["val/acc"] == [(0, pytest.approx(0.2)), (1, pytest.approx(0.3))]  # x is the epoch
    with pytest.raises(EvaError, match="logged tags"):
        compare([tmp_path / "run"], ["val/nope"], tmp_path / "x.png")
    with pytest.raises(EvaError, match="no TensorBoard event files"):
        read_run(tmp_path)
