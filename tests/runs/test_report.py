"""report.md after `eva fit` and from `eva report RUN_DIR`."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eva_lightning.cli import EvaCLI
from conftest import ROOT
from eva_lightning.tools.report import main as report_main


def image_links(report: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())


def all_links(report: Path) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", report.read_text())


def test_fit_writes_a_report_whose_links_resolve(tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    EvaCLI(args=[
        "fit", "--config", str(tiny_config), "--trainer.max_epochs", "2",
        "--trainer.callbacks+=tiny.SavesFigures",
    ])
    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    report = run / "report.md"
    text = report.read_text()

    links = image_links(report)
    assert sorted(links) == ["curves.png", "figures/confusion_matrix.png", "misclassified_epoch1.png"]
    assert "misclassified_epoch0.png" in all_links(report)  # earlier epochs: linked, not embedded
    assert all((run / link).is_file() for link in all_links(report))
    assert text.index("### Training curves") < text.index("### Misclassified") < text.index("### Confusion")

    rows = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|", text, re.MULTILINE))
    assert {"val/acc", "val/loss", "train/acc", "train/loss", "lr"} <= set(rows)
    # validation was the test split: final values only, nothing called best
    assert "| metric | final |\n" in text and re.search(r"^\| `val/acc` \| [0-9.]+ \|$", text, re.MULTILINE)
    assert "best" not in text.split("## Configuration")[0].lower()
    # the page opens with the run's headline: test accuracy first
    headline = text.split("\n\n")[1].splitlines()[2:]
    assert headline[0] == f"| test accuracy | {100 * float(rows['val/acc']):.2f}% (final epoch; validation ran on the test split) |"
    assert re.fullmatch(r"\| epochs \| 2 of 2 in ([0-9.]+ s|\d+ min \d\d s) \|", headline[2])  # a busy machine: minutes
    assert f"| run folder | {Path('lightning_logs') / 'tiny' / 'version_0'} |" in headline
    assert "class_path: tiny.TinyNet" in text  # the resolved config
    assert re.search(r"\| lightning \| \d+\.\d+", text) and "| cpu |" in text
    result = json.loads((run / "fit_result.json").read_text())
    assert result["status"] == "finished" and result["epochs"] == 2 and result["wall_time_s"] > 0
    assert "| status |" not in text and "| gpu | none |" in text  # a status row only when not finished

    # `eva report` on the run-name folder rebuilds the page of its newest version from the run's files
    report.unlink()
    report_main([str(run.parent)])
    assert image_links(report) == links and re.search(r"\| epochs \| 2 of 2 in ", report.read_text())


def test_make_reference_keeps_scalars_final_images_and_newest_figures(tmp_path):
    import importlib.util

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    spec = importlib.util.spec_from_file_location("make_reference", ROOT / "scripts" / "make_reference.py")
    make_reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_reference)

    run = tmp_path / "lightning_logs" / "s4" / "version_3"
    writer = SummaryWriter(str(run))
    for step in range(5):
        writer.add_scalar("val/acc", 0.5 + step / 10, step)
        writer.add_scalar("epoch", step, step)
    for step, shade in ((0, 0), (4, 255)):
        writer.add_image("misclassified", np.full((3, 4, 4), shade, dtype=np.uint8), step)
    writer.close()
    (run / "config.yaml").write_text("model:\n  class_path: tiny.TinyNet\n")
    for epoch in (1, 2, 10):
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(run / f"misclassified_epoch{epoch}.png")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"0" * 1000)

    out = tmp_path / "reference"
    make_reference.main([str(run.parent), "--out", str(out)])
    ref = out / "s4"
    assert sorted(p.name for p in ref.glob("*.png")) == ["misclassified_epoch10.png"]
    assert not (ref / "checkpoints").exists()
    events = EventAccumulator(str(ref), size_guidance={"images": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("val/acc")] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert [e.step for e in events.Images("misclassified")] == [4]  # the final image only
    links = image_links(ref / "report.md")
    text = (ref / "report.md").read_text()
    assert links == ["misclassified_epoch10.png"] and "| `val/acc` | 0.9000 |\n" in text and "best" not in text.lower()
    assert "| test accuracy | 90.00% (final epoch; validation ran on the test split) |" in text


def test_a_held_out_split_gets_a_best_for_validation_only(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from eva_lightning.runs.report import Headline, write_report

    run = tmp_path / "lightning_logs" / "s10" / "version_0"
    writer = SummaryWriter(str(run))
    for epoch, (val, train) in enumerate([(0.5, 0.4), (0.8, 0.6), (0.7, 0.9)]):
        writer.add_scalar("val/acc", val, epoch)
        writer.add_scalar("train/acc", train, epoch)
        writer.add_scalar("epoch", epoch, epoch)
    writer.add_scalar("test/acc", 0.75, 2)  # fit's final test of the final weights
    writer.add_scalar("test/loss", 0.6, 2)
    writer.close()
    (run / "config.yaml").write_text("data:\n  val_split: 0.1\ntrainer:\n  max_epochs: 3\n")
    (run / "fit_result.json").write_text('{"wall_time_s": 125.0, "epochs": 3, "global_step": 30, "status": "finished"}')

    rows = dict(Headline.from_run(run).rows())
    assert list(rows)[:3] == ["test accuracy", "test loss", "validation accuracy"]
    assert rows["test accuracy"] == "75.00% (final weights, test split)"
    assert rows["validation accuracy"] == "70.00% final; best 80.00% at epoch 1 (held-out 0.1 of the training set)"
    assert rows["epochs"] == "3 of 3 in 2 min 05 s"
    text = write_report(run)[0].read_text()
    assert "| metric | final | best (held-out validation) |" in text
    assert "| `test/acc` | 0.7500 |  |" in text and "| `train/acc` | 0.9000 |  |" in text
    assert "| `val/acc` | 0.7000 | 0.8000 (epoch 1) |" in text


def test_a_resumed_run_is_timed_without_the_pause_between_its_starts(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from eva_lightning.runs.report import Headline
    from eva_lightning.tools.seeds import read_seed_run

    run = tmp_path / "s6" / "seed_1"
    # started at t0, killed after epoch 1 (t0 + 120 s), resumed an hour later for epochs 2-3 (60 s each)
    t0 = 1_800_000_000.0
    points = [(0, t0 + 60), (1, t0 + 120), (2, t0 + 3720), (3, t0 + 3780)]
    writer = SummaryWriter(str(run))
    for epoch, wall in points:
        writer.add_scalar("val/acc", 0.9 + epoch / 100, epoch, walltime=wall)
        writer.add_scalar("train/loss", 1.0 / (epoch + 1), epoch, walltime=wall)
    writer.close()
    (run / "config.yaml").write_text("seed_everything: 1\ntrainer:\n  max_epochs: 4\n")
    started = lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")  # noqa: E731
    (run / "run_info.yaml").write_text(f"stage: fit\nstarted: '{started(t0)}'\n---\n"
                                       f"stage: fit\nstarted: '{started(t0 + 3650)}'\n")
    # the end of fit is written by the last start only: its 70 s are not the run's
    (run / "fit_result.json").write_text('{"wall_time_s": 70.0, "epochs": 4, "global_step": 40, "status": "finished"}')

    assert read_seed_run(run).wall_s == 60 + 60  # first start: t0+60 .. t0+120; second: t0+3720 .. t0+3780
    assert dict(Headline.from_run(run).rows())["epochs"] == "4 of 4 in 2 min 00 s"
    (run / "run_info.yaml").write_text(f"stage: fit\nstarted: '{started(t0)}'\n")  # one start: fit_result.json's time
    assert dict(Headline.from_run(run).rows())["epochs"] == "4 of 4 in 70.0 s"
