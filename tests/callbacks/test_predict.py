"""`eva predict` on a folder of the user's own images: predictions.csv, skipped files, GradCAM."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_CONFIG, write_mnist
from eva_lightning.cli import EvaCLI
from eva_lightning.entry import main


def write_own_images(root: Path) -> tuple[list[str], str]:
    """Images of mixed sizes and modes (RGB, grey, RGBA, palette, in a sub-folder) and one corrupt file."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(root / "photo.png")
    Image.fromarray(rng.integers(0, 255, (100, 80), dtype=np.uint8)).save(root / "grey.jpg")
    Image.fromarray(rng.integers(0, 255, (28, 28, 4), dtype=np.uint8), "RGBA").save(root / "sub" / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).convert("P").save(root / "palette.gif")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image after all")
    return ["grey.jpg", "palette.gif", "photo.png", "sub/alpha.png"], "broken.png"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A TinyNet trained for one epoch on synthetic MNIST, shared by this module's tests: (config, checkpoint)."""
    root = tmp_path_factory.mktemp("trained")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(data_dir=write_mnist(root / "data")))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        EvaCLI(args=["fit", "--config", str(config)])
    ckpt = root / "lightning_logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    return config, ckpt


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_writes_one_row_per_readable_image_and_names_the_skipped(tmp_path, trained, monkeypatch, caplog):
    tiny_config, trained = trained
    readable, corrupt = write_own_images(tmp_path / "mine")
    args = ["predict", "--config", str(tiny_config), "--ckpt_path", str(trained), "--data.predict_dir", "mine"]
    args += ["--gradcam", "true"]
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="eva_lightning")
    main(args)  # `eva predict ...` in-process (a subprocess costs ~8 s of imports on 2 cores)

    run = tmp_path / "lightning_logs" / "tiny" / "version_0"  # predict's own run directory
    rows = read_csv(run / "predictions.csv")
    assert [r["file"] for r in rows] == readable
    for row in rows:
        assert row["prediction"] in [str(i) for i in range(10)]
        assert 0.0 < float(row["probability"]) <= 1.0
        top3 = row["top3"].split("; ")
        assert len(top3) == 3 and top3[0] == f"{row['prediction']} ({float(row['probability']):.3f})"
    out = caplog.text
    assert "skipped 1 unreadable file(s)" in out and corrupt in out
    assert f"predicted {len(readable)} image(s)" in out
    overlays = sorted(p.name for p in (run / "gradcam").glob("*.png"))
    assert overlays == sorted(f"{Path(n.replace('/', '__')).stem}.png" for n in readable)
    with Image.open(run / "gradcam" / overlays[0]) as img:
        assert max(img.size) == 256  # OVERLAY_SIDE: readable even for 28 px inputs


def test_predict_without_gradcam_writes_no_overlays(tmp_path, trained, monkeypatch):
    tiny_config, trained = trained
    readable, _ = write_own_images(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    EvaCLI(args=["predict", "--config", str(tiny_config), "--ckpt_path", str(trained), "--data.predict_dir", "mine"])
    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    assert len(read_csv(run / "predictions.csv")) == len(readable)
    assert not (run / "gradcam").exists()


def test_gradcam_option_is_only_on_predict(capsys):
    helps = {}
    for sub in ("predict", "fit"):
        with pytest.raises(SystemExit):
            EvaCLI(args=[sub, "--help"])
        helps[sub] = capsys.readouterr().out
    assert "--gradcam" in helps["predict"] and "--gradcam" not in helps["fit"]


def test_predict_with_the_committed_s4_checkpoint_labels_the_example_digits(tmp_path, monkeypatch):
    """The random-image tests above pass for any weights; this one fails if the checkpoint is not loaded or the
    pipeline mangles the images: checkpoints/s4.ckpt labels docs/examples/digits (test_NN_label<d>.*) correctly."""
    from conftest import ROOT

    examples = ROOT / "docs" / "examples" / "digits"
    monkeypatch.chdir(tmp_path)
    main(["predict", "--config", str(ROOT / "configs" / "s4.yaml"), "--ckpt_path", str(ROOT / "checkpoints" / "s4.ckpt"),
          "--data.predict_dir", str(examples), "--trainer.enable_progress_bar", "false"])
    rows = read_csv(tmp_path / "lightning_logs" / "s4" / "version_0" / "predictions.csv")
    assert len(rows) == len(list(examples.iterdir())) == 10
    assert {r["file"]: r["prediction"] for r in rows} == {r["file"]: Path(r["file"]).stem[-1] for r in rows}
