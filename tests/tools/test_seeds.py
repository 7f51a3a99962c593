"""``eva seeds``: one ``eva fit`` per seed, final-epoch accuracies, mean ± sample sd, from the events."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import eva_env
from eva_lightning.core.errors import EvaError
from eva_lightning.tools import seeds
from eva_lightning.runs.result import read_scalars


def final_val_acc(run_dir: Path) -> tuple[float, list[float]]:
    """What the events say, read independently of the tool: the last and last-3 ``val/acc``."""
    points = sorted((step, value) for step, value, _ in read_scalars(run_dir)["val/acc"])
    return points[-1][1], [v for _, v in points[-3:]]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key, value in eva_env().items():  # the subprocesses import tiny.TinyNet from tests/
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("EVA_DATA_DIR", raising=False)
    return tmp_path


def test_two_seeds_table_mean_sd_from_events(in_tmp, tiny_config, capsys):
    seeds.main(["--config", str(tiny_config), "--seeds", "3", "7", "--", "--trainer.max_epochs", "2"])
    root = in_tmp / "lightning_logs" / "tiny"
    runs = {seed: root / f"seed_{seed}" for seed in (3, 7)}
    for seed, run in runs.items():
        assert run.is_dir() and (run / "checkpoints" / "last.ckpt").exists()
        assert yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] == seed

    expected = {seed: final_val_acc(run) for seed, run in runs.items()}
    finals = [expected[3][0], expected[7][0]]
    data = json.loads((root / "seeds.json").read_text())
    assert [r["seed"] for r in data["runs"]] == [3, 7]
    for row in data["runs"]:
        assert row["metric"] == "val/acc" and row["epochs"] == 2
        assert row["final"] == pytest.approx(expected[row["seed"]][0])
        assert row["last3"] == pytest.approx(expected[row["seed"]][1]) and len(row["last3"]) == 2
    assert data["n"] == 2
    assert data["mean"] == pytest.approx(statistics.mean(finals))
    assert data["sd"] == pytest.approx(statistics.stdev(finals))  # sample sd, n - 1

    table = (root / "seeds.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 3 ") or line.startswith("| 7 ")]
    assert len(rows) == 2
    assert f"{100 * statistics.mean(finals):.2f} ± {100 * statistics.stdev(finals):.2f}" in table
    assert "seeds.md" in capsys.readouterr().out

    # --from-runs tabulates the same runs again, without training
    out = in_tmp / "again.md"
    seeds.main(["--from-runs", str(runs[3]), str(runs[7]), "--out", str(out)])
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["mean"] == pytest.approx(data["mean"]) and again["sd"] == pytest.approx(data["sd"])
    seeds.main(["--from-runs", str(root), "--out", str(out)])  # the folder of seed_N runs: all of them
    assert [r["seed"] for r in json.loads(out.with_suffix(".json").read_text())["runs"]] == [3, 7]

    # a second run of the same seeds does not write into the finished runs...
    with pytest.raises(EvaError, match="already exists"):
        seeds.main(["--config", str(tiny_config), "--seeds", "3"])
    # ...unless asked to resume, which keeps them
    seeds.main(["--config", str(tiny_config), "--seeds", "3", "--resume", "--out", str(in_tmp / "kept.md"), "--",
                "--trainer.max_epochs", "2"])
    assert len(list(runs[3].glob("events.out.tfevents.*"))) == 1


def test_from_runs_refuses_unfinished_and_held_out_without_test(in_tmp, tiny_config):
    from eva_lightning.cli import EvaCLI

    EvaCLI(args=["fit", "--config", str(tiny_config), "--trainer.max_epochs", "1"])
    run = in_tmp / "lightning_logs" / "tiny" / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())

    config["trainer"]["max_epochs"] = 3  # as if the run had crashed after its first epoch
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(EvaError, match="stopped after epoch 1 of 3"):
        seeds.main(["--from-runs", str(run)])

    config["trainer"]["max_epochs"] = 1
    config["data"]["val_split"] = 0.1  # val/acc would be the held-out split, not the test split
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(EvaError, match="no test/acc"):
        seeds.main(["--from-runs", str(run)])


def test_held_out_validation_reports_the_test_split(in_tmp, tiny_config, monkeypatch):
    """With data.val_split > 0, val/acc is the held-out split: the table takes test/acc (final weights)."""
    from eva_lightning.entry import main

    def fit_in_process(cmd: list[str]) -> subprocess.CompletedProcess:  # `python -m eva_lightning fit ...`
        main(cmd[3:])
        return subprocess.CompletedProcess(cmd, 0)

    # only seeds' own `subprocess.run`: the test above starts real ones
    monkeypatch.setattr(seeds, "subprocess", SimpleNamespace(run=fit_in_process))
    seeds.main(["--config", str(tiny_config), "--seeds", "1", "--", "--trainer.max_epochs", "2", "--data.val_split", "0.25"])
    run = in_tmp / "lightning_logs" / "tiny" / "seed_1"
    test_acc = [value for _, value, _ in read_scalars(run)["test/acc"]]
    row = json.loads((run.parent / "seeds.json").read_text())["runs"][0]
    assert row["metric"] == "test/acc" and row["epochs"] == 2
    assert row["final"] == pytest.approx(test_acc[-1]) and row["last3"] == pytest.approx(test_acc[-3:])


def test_tuning_seeds_of_the_config_are_tabulated_apart_from_the_reporting_seeds(in_tmp, tiny_config, monkeypatch):
    """A config naming ``tuning_seeds`` gets its other seeds' mean ± sd as the figure, its tuning seeds apart."""
    from eva_lightning.entry import main

    def fit_in_process(cmd: list[str]) -> subprocess.CompletedProcess:
        main(cmd[3:])
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(seeds, "subprocess", SimpleNamespace(run=fit_in_process))
    tiny_config.write_text(tiny_config.read_text() + "tuning_seeds: [2]\n")
    seeds.main(["--config", str(tiny_config), "--seeds", "2", "5", "6", "--", "--trainer.max_epochs", "1"])
    root = in_tmp / "lightning_logs" / "tiny"
    assert yaml.safe_load((root / "seed_5" / "config.yaml").read_text())["tuning_seeds"] == [2]  # every run records it
    finals = {seed: final_val_acc(root / f"seed_{seed}")[0] for seed in (2, 5, 6)}
    data = json.loads((root / "seeds.json").read_text())
    assert data["n"] == 2 and data["mean"] == pytest.approx(statistics.mean([finals[5], finals[6]]))
    assert data["tuning"]["n"] == 1 and data["tuning"]["mean"] == pytest.approx(finals[2])
    assert {r["seed"]: r["tuning"] for r in data["runs"]} == {2: True, 5: False, 6: False}
    table = (root / "seeds.md").read_text()
    reporting, tuning = table.split("#### Tuning seeds")
    assert "#### Reporting seeds" in reporting and "| 5 |" in reporting and "| 6 |" in reporting and "| 2 |" not in reporting
    assert "chosen on seeds 2" in tuning and "| 2 |" in tuning and "| 5 |" not in tuning


def test_one_seed_has_no_sd():
    run = seeds.SeedRun(seed=1, run_dir="r", metric="val/acc", epochs=3, final=0.99, last3=[0.98, 0.985, 0.99], wall_s=1)
    assert seeds.mean_sd([run]) == {"n": 1, "mean": 0.99, "sd": None, "min_last3": 0.98}
    assert "99.00 ± –" in seeds.markdown([run], "one")


def test_bad_arguments(in_tmp, tiny_config):
    with pytest.raises(EvaError, match="needs --config"):
        seeds.main(["--seeds", "1"])
    with pytest.raises(EvaError, match="repeats a seed"):
        seeds.main(["--config", str(tiny_config), "--seeds", "1", "1"])
    with pytest.raises(EvaError, match="does not exist"):
        seeds.main(["--config", "nope.yaml"])
    with pytest.raises(EvaError, match="not a folder"):
        seeds.main(["--from-runs", str(in_tmp / "missing")])
