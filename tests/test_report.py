"""report.md after `eva fit` and from `eva report RUN_DIR`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from PIL import Image

from eva_lightning.cli import EvaCLI
from eva_lightning.errors import EvaError
from eva_lightning.report import main as report_main


class SavesFigures(L.Callback):
    """Stands in for the figure callbacks: PNGs in the run directory at the end of fitting."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = Path(trainer.log_dir)
        img = np.zeros((8, 8, 3), dtype=np.uint8)
        for name in ("curves.png", "misclassified_epoch0.png", "misclassified_epoch1.png", "figures/confusion_matrix.png"):
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(run / name)


def image_links(report: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())


def all_links(report: Path) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", report.read_text())


def test_fit_writes_a_report_whose_links_resolve(tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    EvaCLI(args=[
        "fit", "--config", str(tiny_config), "--trainer.max_epochs", "2",
        "--trainer.callbacks+=test_report.SavesFigures",
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
    assert re.search(r"\| `val/acc` \| [0-9.]+ \| [0-9.]+ \(epoch [01]\) \|", text)
    assert "| epochs | 2 of 2 |" in text
    assert "class_path: tiny.TinyNet" in text  # the resolved config
    assert re.search(r"\| lightning \| \d+\.\d+", text) and "| cpu |" in text
    result = json.loads((run / "fit_result.json").read_text())
    assert result["status"] == "finished" and result["epochs"] == 2 and result["wall_time_s"] > 0
    assert "| status | finished |" in text and "| gpu | none |" in text

    # `eva report` on the run-name folder rebuilds the page of its newest version from the run's files
    report.unlink()
    report_main([str(run.parent)])
    assert image_links(report) == links and "| epochs | 2 of 2 |" in report.read_text()


def test_report_of_a_missing_run_is_a_plain_error(tmp_path):
    with pytest.raises(EvaError, match="not a folder"):
        report_main([str(tmp_path / "nope")])
    with pytest.raises(EvaError, match="holds no run"):
        report_main([str(tmp_path)])


def test_make_reference_keeps_scalars_final_images_and_newest_figures(tmp_path):
    import importlib.util

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    spec = importlib.util.spec_from_file_location("make_reference", Path(__file__).parents[1] / "scripts" / "make_reference.py")
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
    assert links == ["misclassified_epoch10.png"] and "`val/acc` | 0.9000 | 0.9000 (epoch 4)" in (ref / "report.md").read_text()
