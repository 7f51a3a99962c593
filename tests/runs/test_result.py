"""``RunResult.result_of_record``: the one rule every reader (report, seeds, compare, benchmarks) follows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from conftest import ROOT
from eva_lightning.core.errors import EvaError
from eva_lightning.runs.report import Headline
from eva_lightning.runs.result import RunResult
from eva_lightning.tools.seeds import read_seed_run


def write_run(run: Path, val_acc: list[float], test_acc: float | None = None, val_split: float = 0.0,
              max_epochs: int | None = None) -> Path:
    """A run as ``eva fit`` leaves it: per-epoch ``val/acc`` and ``train/loss``, a final ``test/acc`` if given."""
    writer = SummaryWriter(str(run))
    for epoch, acc in enumerate(val_acc):
        for tag, value in (("val/acc", acc), ("train/loss", 1.0 / (epoch + 1)), ("epoch", epoch)):
            writer.add_scalar(tag, value, epoch)
    if test_acc is not None:
        writer.add_scalar("test/acc", test_acc, len(val_acc))
    writer.close()
    (run / "config.yaml").write_text(f"data:\n  val_split: {val_split}\ntrainer:\n  max_epochs: {max_epochs or len(val_acc)}\n")
    return run


def summarize_runs():
    spec = importlib.util.spec_from_file_location("summarize_runs", ROOT / "benchmarks" / "summarize_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validation_on_the_test_split_its_final_epoch_is_the_result(tmp_path):
    run = write_run(tmp_path / "s5" / "version_0", val_acc=[0.5, 0.9, 0.8])
    record = RunResult(run).result_of_record()
    assert (record.metric, record.values[-1], record.epochs) == ("val/acc", pytest.approx(0.8), 3)  # not the best 0.9
    assert RunResult(run).best("val/acc") is None  # no epoch is chosen on the test split
    assert read_seed_run(run).final == record.values[-1]
    assert Headline.from_run(run).rows()[0] == ("test accuracy", "80.00% (final epoch; validation ran on the test split)")
    assert summarize_runs().summarize(run)["final_test"] == "80.00%"


def test_a_held_out_split_takes_the_test_of_the_final_weights(tmp_path):
    run = write_run(tmp_path / "s10" / "version_0", val_acc=[0.5, 0.9, 0.8], test_acc=0.75, val_split=0.1)
    record = RunResult(run).result_of_record()
    assert (record.metric, record.values[-1]) == ("test/acc", pytest.approx(0.75))
    assert RunResult(run).best("val/acc") == (pytest.approx(0.9), "epoch 1")  # the held-out split may choose
    assert read_seed_run(run).metric == "test/acc"
    assert Headline.from_run(run).rows()[0] == ("test accuracy", "75.00% (final weights, test split)")
    assert summarize_runs().summarize(run)["final_test"] == "75.00%"


def test_runs_without_a_result_of_record_are_refused(tmp_path):
    untested = write_run(tmp_path / "untested", val_acc=[0.5, 0.9], val_split=0.1)
    with pytest.raises(EvaError, match="logged no test/acc"):
        RunResult(untested).result_of_record()
    stopped = write_run(tmp_path / "stopped", val_acc=[0.5, 0.9], max_epochs=5)
    with pytest.raises(EvaError, match="stopped after epoch 2 of 5"):
        RunResult(stopped).result_of_record()
    assert summarize_runs().summarize(stopped)["final_test"] == "–"
    # report.md still shows where a stopped run got to, marked as stopped
    rows = dict(Headline.from_run(stopped).rows())
    assert rows["test accuracy"].startswith("90.00%") and rows["status"].startswith("running or stopped")
