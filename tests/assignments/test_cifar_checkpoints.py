"""The committed CIFAR-10 checkpoints (checkpoints/s7.ckpt, s11.ckpt) label the ten example images in
docs/examples/cifar (one per class, the first test image of each class of the JPEG copy), with heat maps."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from conftest import ROOT
from eva_lightning.entry import main

EXAMPLES = ROOT / "docs" / "examples" / "cifar"
#: the examples each checkpoint labels wrongly (file → predicted class), as recorded in docs/cifar.md
WRONG: dict[str, dict[str, str]] = {"s7": {}, "s11": {}}
#: final-epoch test accuracy recorded for each committed checkpoint on the JPEG copy (docs/cifar.md)
RECORDED = {"s7": 0.8814, "s11": 0.9078}


def true_class(name: str) -> str:
    return name.split("_")[1]  # test_<class>_<index>.jpg


@pytest.mark.parametrize("name", sorted(WRONG))
def test_committed_checkpoint_labels_the_examples(name, tmp_path, monkeypatch):
    ckpt = ROOT / "checkpoints" / f"{name}.ckpt"
    if not ckpt.exists():
        pytest.skip(f"{ckpt.name} is not committed yet")
    monkeypatch.chdir(tmp_path)
    main(["predict", "--config", str(ROOT / "configs" / f"{name}.yaml"), "--ckpt_path", str(ckpt),
          "--data.predict_dir", str(EXAMPLES), "--gradcam", "true", "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"])
    run = tmp_path / "lightning_logs" / name / "version_0"
    with open(run / "predictions.csv", newline="") as f:
        rows = {row["file"]: row["prediction"] for row in csv.DictReader(f)}
    files = sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    assert len(files) == 10 and sorted(rows) == files
    assert sorted(true_class(f) for f in files) == sorted(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    # an unloaded or wrong checkpoint labels (nearly) everything one class, or at random
    assert rows == {f: WRONG[name].get(f, true_class(f)) for f in files}
    overlays = sorted(p.name for p in (run / "gradcam").glob("*.png"))
    assert overlays == [f"{Path(f).stem}.png" for f in files]


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_committed_checkpoint_reproduces_recorded_accuracy_on_the_jpeg_copy(name, tmp_path, monkeypatch):
    """``eva test`` on the committed checkpoint gives the final-epoch accuracy its CPU run recorded."""
    from eva_lightning.cli import EvaCLI

    data = Path(os.environ.get("EVA_DATA_DIR", "data")).resolve()
    if not (data / "cifar10-jpeg.tar.gz").is_file() and not (data / "cifar-10-batches-py").is_dir():
        pytest.skip(f"CIFAR-10 not found under EVA_DATA_DIR={data}")
    ckpt = ROOT / "checkpoints" / f"{name}.ckpt"
    if not ckpt.exists():
        pytest.skip(f"{ckpt.name} is not committed yet")
    monkeypatch.chdir(tmp_path)
    # fp32 evaluation: the same figure on every CPU (bf16 autocast is native on some, emulated on others); the
    # float16-stored s11.ckpt gives 90.76% so, 90.75% under the config's bf16-mixed (docs/cifar.md)
    cli = EvaCLI(args=["--config", str(ROOT / "configs" / f"{name}.yaml"), "--data.data_dir", str(data),
                       "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.precision", "32-true",
                       "--trainer.enable_progress_bar", "false"], run=False)
    acc = cli.trainer.test(cli.model, cli.datamodule, ckpt_path=str(ckpt), verbose=False)[0]["test/acc"]
    assert acc == pytest.approx(RECORDED[name], abs=5e-4)
