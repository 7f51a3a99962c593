"""What ``eva`` prints (issue #26, "What the user reads"): each Lightning line once, no warnings about
the machine that trained a checkpoint, log lines on lines of their own (not glued to a progress bar),
a TensorBoard command that survives a space, a partial evaluation that says how partial it was, no
placeholder ``hp_metric``, and the MNIST configs' figures as files."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, TINY_CONFIG, eva_env, read_config, write_mnist

ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EMA = """\
  callbacks:
    - class_path: eva_lightning.callbacks.WarmupEMA
      init_args: {decay: 0.9}
    - class_path: eva_lightning.callbacks.MisclassifiedGrid
      init_args: {num_images: 4, every_n_epochs: 1}
"""


def eva_console(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``eva ARGS`` with stdout (Lightning's progress bars, the closing lines) and stderr (log lines)
    in one stream, in the order a terminal shows them."""
    return subprocess.run([sys.executable, "-m", "eva_lightning", *args], cwd=cwd, env=eva_env({"PYTHONUNBUFFERED": "1"}),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)


def shown_from_start(stream: str, needle: str) -> list[bool]:
    """For each line holding ``needle``: whether it starts the line a terminal shows (after the
    carriage returns and cursor moves of a progress bar), i.e. is not glued to the end of the bar."""
    lines = [line for line in stream.split("\n") if needle in line]
    return [ESCAPE.sub("", line.split("\r")[-1]).lstrip().startswith(("INFO", "predicted")) for line in lines]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny fit (progress bar on, WarmupEMA, 2 validation batches, a run root with a space), then
    ``eva predict`` of its checkpoint copied elsewhere, as a committed checkpoint is."""
    root = tmp_path_factory.mktemp("output")
    data = write_mnist(root / "data")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(data_dir=data).replace("  enable_progress_bar: false\n", EMA))
    fit = eva_console("fit", "--config", str(config), "--trainer.limit_val_batches", "2",
                      "--trainer.default_root_dir", "my runs", cwd=root)
    assert fit.returncode == 0, fit.stdout[-3000:]
    run = root / "my runs" / "tiny" / "version_0"
    (root / "committed").mkdir()
    ckpt = shutil.copy(run / "checkpoints" / "last.ckpt", root / "committed" / "tiny.ckpt")
    images = root / "mine"
    images.mkdir()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(images / "a.png")
    predict = eva_console("predict", "--config", str(config), "--ckpt_path", str(ckpt), "--data.predict_dir", "mine",
                          cwd=root)
    assert predict.returncode == 0, predict.stdout[-3000:]
    return {"fit": fit, "predict": predict, "run": run}


def test_lightning_info_lines_print_once(runs):
    for proc in (runs["fit"], runs["predict"]):
        assert proc.stdout.count("Seed set to 1") == 1, proc.stdout[:2000]


def test_predict_of_a_checkpoint_from_elsewhere_warns_of_nothing(runs):
    err = runs["predict"].stdout
    assert "WeightAveraging" not in err  # the EMA callback of the config: nothing to restore outside fit
    assert "dirpath has changed" not in err  # ModelCheckpoint's bookkeeping of the run that wrote the file
    assert "my runs" not in err  # no path of the machine (here: the run) that trained it


def test_log_lines_start_their_own_line_after_a_progress_bar(runs):
    predicted = shown_from_start(runs["predict"].stdout, "predicted 1 image(s)")
    figures = shown_from_start(runs["fit"].stdout, "misclassified: wrote")
    assert "Predicting DataLoader" in runs["predict"].stdout and "Epoch 0" in runs["fit"].stdout  # the bars ran
    assert predicted == [True] and figures and all(figures), (runs["predict"].stdout[-1500:], runs["fit"].stdout[-1500:])


def test_tensorboard_command_is_quoted(runs):
    out = runs["fit"].stdout
    assert "tensorboard --logdir 'my runs/tiny/version_0'" in out, out
    assert shlex.split(re.search(r"TensorBoard\s+(.*)", out).group(1))[-1] == "my runs/tiny/version_0"


def test_partial_validation_says_how_much_it_measured(runs):
    part = "only 2 batches of 32 (≤ 64 images): trainer.limit_val_batches=2"
    assert part in runs["fit"].stdout
    assert part in (runs["run"] / "report.md").read_text().split("## Run")[0]  # the headline


def test_no_placeholder_hp_metric(runs):
    from eva_lightning.runs.result import RunResult

    assert "hp_metric" not in RunResult(runs["run"]).scalars  # was -1 in every run's HPARAMS tab


def test_partial_evaluation_wording():
    from eva_lightning.runs.report import Headline, partial_evaluation

    assert partial_evaluation({"limit_test_batches": 1}, "test", 128) == \
        "only 1 batch of 128 (≤ 128 images): trainer.limit_test_batches=1"
    assert partial_evaluation({"limit_val_batches": 0.25}, "val", 128) == "only 25% of its batches: trainer.limit_val_batches=0.25"
    assert partial_evaluation({"overfit_batches": 3, "limit_val_batches": 1.0}, "val", 8).endswith("trainer.overfit_batches=3")
    for whole in (None, 1.0, 1.5):
        assert partial_evaluation({"limit_val_batches": whole}, "val", 128) is None
    rows = dict(Headline("test", {"test/acc": 0.5}, partial={"test": "only 2 batches"}).rows())
    assert rows["test accuracy"] == "50.00% (test split; only 2 batches)"
    assert dict(Headline("test", {"test/acc": 0.5}).rows())["test accuracy"] == "50.00% (test split)"  # whole split: as before


MNIST_RUNS = sorted(p for p in (ROOT / "configs").glob("s[456]*.yaml")
                    if not p.stem.endswith("_base") and p.stem != "s4_literal")


@pytest.mark.parametrize("config", MNIST_RUNS, ids=lambda p: p.stem)
def test_mnist_configs_write_curves_and_the_final_misclassified_grid(config):
    trainer = read_config(config)["trainer"]
    callbacks = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args") or {} for c in trainer.get("callbacks", [])}
    assert "CurvesFigure" in callbacks and "MisclassifiedGrid" in callbacks
    assert trainer["max_epochs"] % callbacks["MisclassifiedGrid"].get("every_n_epochs", 1) == 0  # drawn at the final epoch
