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
        for name in ("curves.png", "misclassified_epoch0.png", "figures/confusion_matrix.png"):
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(run / name)


def image_links(report: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())


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
    assert sorted(links) == ["curves.png", "figures/confusion_matrix.png", "misclassified_epoch0.png"]
    assert all((run / link).is_file() for link in links)
    assert text.index("### Training curves") < text.index("### Misclassified") < text.index("### Confusion")

    rows = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|", text, re.MULTILINE))
    assert {"val/acc", "val/loss", "train/acc", "train/loss", "lr"} <= set(rows)
    assert re.search(r"\| `val/acc` \| [0-9.]+ \| [0-9.]+ \(epoch [01]\) \|", text)
    assert "| epochs | 2 of 2 |" in text
    assert "class_path: tiny.TinyNet" in text  # the resolved config
    assert re.search(r"\| lightning \| \d+\.\d+", text) and "| cpu |" in text
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "finished" and info["epochs"] == 2 and info["wall_time_s"] > 0

    # `eva report` on the run-name folder rebuilds the page of its newest version from the run's files
    report.unlink()
    report_main([str(run.parent)])
    assert image_links(report) == links and "| epochs | 2 of 2 |" in report.read_text()


def test_report_of_a_missing_run_is_a_plain_error(tmp_path):
    with pytest.raises(EvaError, match="not a folder"):
        report_main([str(tmp_path / "nope")])
    with pytest.raises(EvaError, match="holds no run"):
        report_main([str(tmp_path)])
