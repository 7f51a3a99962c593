"""``eva report`` (:mod:`eva_lightning.tools.report`): a missing run is a plain error; a committed page (tracked by
git, or a reference run) is printed, not rewritten; a run's own page is rebuilt."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from eva_lightning.cli import EvaCLI
from eva_lightning.core.errors import EvaError
from eva_lightning.tools import report


def test_report_of_a_missing_run_is_a_plain_error(tmp_path):
    with pytest.raises(EvaError, match="not a folder"):
        report.main([str(tmp_path / "nope")])
    with pytest.raises(EvaError, match="holds no run"):
        report.main([str(tmp_path)])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from conftest import TINY_CONFIG, write_mnist

    root = tmp_path_factory.mktemp("finished")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(data_dir=write_mnist(root / "data", n_train=64, n_test=32)))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        EvaCLI(args=["fit", "--config", str(config), "--trainer.limit_val_batches=1"])
    finally:
        os.chdir(cwd)
    return root / "lightning_logs" / "tiny" / "version_0"


def test_report_of_a_git_tracked_run_is_not_rewritten(finished_run, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "runs" / "tiny" / "version_0")
    committed = "# the committed page\n"
    (run / "report.md").write_text(committed)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "add", "runs/tiny/version_0/report.md"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "reference"], cwd=tmp_path, check=True)
    report.main([str(run)])
    out, err = capsys.readouterr()
    assert (run / "report.md").read_text() == committed
    assert "is committed: not rewritten" in err and out.startswith("# Run report: tiny/version_0")

    report.main([str(run), "-o", str(tmp_path / "page.md")])  # asked for: written there
    assert (tmp_path / "page.md").read_text().startswith("# Run report: tiny/version_0")
    assert (run / "report.md").read_text() == committed


def test_report_of_a_reference_run_is_printed(finished_run, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "lightning_logs" / "reference" / "tiny")
    before = (run / "report.md").read_text()
    (run / "report.md").write_text(before + "\nhand-written note\n")
    report.main([str(run)])
    assert (run / "report.md").read_text().endswith("hand-written note\n")
    assert capsys.readouterr().out.startswith("# Run report: reference/tiny")


def test_report_of_an_own_run_is_rewritten(finished_run, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "lightning_logs" / "tiny" / "version_0")
    (run / "report.md").write_text("stale\n")
    report.main([str(run)])
    assert (run / "report.md").read_text().startswith("# Run report: tiny/version_0")
    assert "test accuracy" in capsys.readouterr().out
