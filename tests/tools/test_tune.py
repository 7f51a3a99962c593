"""``eva tune``: trials chosen on the held-out split only (never the test split), every trial kept in the study,
resumable, two workers on one SQLite study, a refusal without a held-out split, ``--show`` and ``--apply``."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import ROOT, eva_env
from eva_lightning.core.errors import EvaError
from eva_lightning.data.datamodule import VisionDataModule
from eva_lightning.tools import seeds
from eva_lightning.runs.result import read_scalars
from eva_lightning.tools import tune

SPACE = "model.init_args.width: [4, 6]\n"


def fit_in_process(cmd: list[str]) -> subprocess.CompletedProcess:
    """``python -m eva_lightning fit ...`` of :func:`seeds.train_seeds`, run in this process (seconds of imports
    saved per fit on a small CPU)."""
    from eva_lightning.entry import main

    main(cmd[3:])
    return subprocess.CompletedProcess(cmd, 0)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, tiny_config):
    """A folder with the tiny config (held-out split of 64 of its 256 training images, tuning seeds 1 and 2) and a
    space of two widths; fits run in-process."""
    monkeypatch.chdir(tmp_path)
    for key, value in eva_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("EVA_DATA_DIR", raising=False)
    monkeypatch.setattr(seeds, "subprocess", SimpleNamespace(run=fit_in_process))
    tiny_config.write_text(tiny_config.read_text().replace("  batch_size: 32\n", "  batch_size: 32\n  val_split: 64\n")
                           + "tuning_seeds: [1, 2]\n")
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


@pytest.fixture
def test_split_reads(monkeypatch) -> list[str]:
    """Every split the data modules load (``_load("train" | "test")``), in order."""
    loads: list[str] = []
    original = VisionDataModule._load

    def spy(self, split):
        loads.append(split)
        return original(self, split)

    monkeypatch.setattr(VisionDataModule, "_load", spy)
    return loads


def final_val_acc(run: Path) -> float:
    """The last ``val/acc`` of the run's events, read independently of the tool."""
    return sorted((step, value) for step, value, _ in read_scalars(run)["val/acc"])[-1][1]


def test_trials_score_the_final_held_out_accuracy_and_never_read_the_test_split(in_tmp, tiny_config, test_split_reads,
                                                                                  capsys):
    import optuna

    # the first start runs one trial of the grid; a second start (no --trials) runs the point still missing
    tune.main(["--config", str(tiny_config), "--space", "space.yaml", "--trials", "1"])
    tune.main(["--study", "space"])
    assert "test" not in test_split_reads and "train" in test_split_reads  # the test images were never loaded

    db = in_tmp / "lightning_logs" / "tune" / "space.db"
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{db}")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["model.init_args.width"] for t in trials) == [4, 6]  # each grid point once
    for t in trials:
        runs = {s: in_tmp / "lightning_logs" / "tune" / "space" / f"trial_{t.number}" / f"seed_{s}" for s in (1, 2)}
        for seed, run in runs.items():
            tags = read_scalars(run)
            assert not [tag for tag in tags if tag.startswith("test/")], sorted(tags)  # no test/* scalar
            config = yaml.safe_load((run / "config.yaml").read_text())
            assert config["data"]["val_split"] == 64 and config["test_after_fit"] is False
            assert config["seed_everything"] == seed
            assert config["model"]["init_args"]["width"] == t.params["model.init_args.width"]
            assert t.user_attrs["per_seed"][str(seed)]["val_acc"] == pytest.approx(final_val_acc(run))
        # the objective: the mean of the seeds' final held-out accuracies
        assert t.value == pytest.approx(statistics.mean(final_val_acc(r) for r in runs.values()))

    # --show: the table of every trial, from the study alone, and a figure
    capsys.readouterr()
    tune.main(["--show", str(db), "--out", str(in_tmp / "table.md")])
    out = capsys.readouterr().out
    table = (in_tmp / "table.md").read_text()
    assert table in out and db.with_suffix(".png").is_file()
    best = max(trials, key=lambda t: (t.value, -t.number))
    for t in trials:
        accs = " | ".join(f"{100 * t.user_attrs['per_seed'][s]['val_acc']:.2f}" for s in ("1", "2"))
        row = next(line for line in table.splitlines() if line.startswith(f"| {t.number} | complete |"))
        assert f"| {t.params['model.init_args.width']} | {accs} |" in row
        assert (f"**{100 * t.value:.2f}** (chosen)" in row) == (t is best)

    # --apply: a config with the chosen width and the tuning seeds, which eva resolves
    tune.main(["--apply", "space"])
    applied = in_tmp / "tiny_space.yaml"
    cfg = tune.resolve_config([str(applied)], [])
    assert cfg.get("model.init_args.width") == best.params["model.init_args.width"]
    assert cfg.get("tuning_seeds") == [1, 2] and cfg.get("data.val_split") == 64  # the config's own, as it was


def test_a_cut_trial_is_run_again_and_kept(in_tmp, tiny_config, capsys):
    """A trial that failed (a killed run) stays in the study as failed; the next start runs its settings again."""
    import optuna

    tune.main(["--config", str(tiny_config), "--space", "space.yaml", "--seeds", "3", "--trials", "1"])
    db = f"sqlite:///{in_tmp / 'lightning_logs' / 'tune' / 'space.db'}"
    study = optuna.load_study(study_name="space", storage=db)
    done = study.trials[0].params["model.init_args.width"]
    cut = {4: 6, 6: 4}[done]
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={"model.init_args.width": cut},
        distributions={"model.init_args.width": optuna.distributions.CategoricalDistribution([4, 6])}))

    tune.main(["--study", "space"])  # no --trials: the grid point still missing
    assert "queued again the settings of 1" in capsys.readouterr().out
    trials = sorted(optuna.load_study(study_name="space", storage=db).trials, key=lambda t: t.number)
    assert [(t.state.name, t.params["model.init_args.width"]) for t in trials] == [
        ("COMPLETE", done), ("FAIL", cut), ("COMPLETE", cut)]
    tune.main(["--study", "space"])  # nothing left: no new trial, the table of all three
    assert len(optuna.load_study(study_name="space", storage=db).trials) == 3
    assert f"| 1 | fail | {cut} | – | – |" in capsys.readouterr().out  # the failed trial is kept and shown

    with pytest.raises(EvaError, match="made with other seeds"):
        tune.main(["--study", "space", "--seeds", "4"])


def test_refuses_a_config_without_held_out_split_and_a_bad_space(in_tmp, tiny_config):
    no_split = in_tmp / "no_split.yaml"
    no_split.write_text(tiny_config.read_text().replace("  val_split: 64\n", ""))
    with pytest.raises(EvaError, match=r"^data.val_split is 0: validation would run on the test split") as exc:
        tune.main(["--config", str(no_split), "--space", "space.yaml"])
    assert "\n" not in str(exc.value)
    assert not (in_tmp / "lightning_logs" / "tune").exists()  # no trial ran, no study was created

    bad = in_tmp / "bad.yaml"
    bad.write_text("model.init_args.widht: [4, 6]\n")
    with pytest.raises(EvaError, match="did you mean 'width'"):
        tune.main(["--config", str(tiny_config), "--space", str(bad)])
    bad.write_text("data.val_split: [0.1, 0.2]\n")
    with pytest.raises(EvaError, match="cannot be tuned"):
        tune.main(["--config", str(tiny_config), "--space", str(bad)])
    bad.write_text("model.init_args.optimizer.init_args.lr: {low: 0.01, high: 0.1, log: true}\n")
    with pytest.raises(EvaError, match="grid needs a list of choices"):
        tune.main(["--config", str(tiny_config), "--space", str(bad), "--sampler", "grid", "--trials", "1"])


def fake_run(run: Path, tags: dict[str, list[float]], val_split: float, max_epochs: int = 2) -> Path:
    """A run folder with these per-epoch scalars and a config.yaml (no training)."""
    from torch.utils.tensorboard import SummaryWriter

    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"val_split": val_split},
                                                     "trainer": {"max_epochs": max_epochs}}))
    with SummaryWriter(str(run)) as writer:
        for tag, values in {"epoch": [float(e) for e in range(max_epochs)], **tags}.items():
            for step, value in enumerate(values):
                writer.add_scalar(tag, value, step)
    return run


def test_the_held_out_record_refuses_a_run_that_saw_the_test_split(tmp_path):
    from eva_lightning.runs.result import RunResult

    ok = fake_run(tmp_path / "ok", {"train/loss": [1.0, 0.5], "val/acc": [0.5, 0.75]}, val_split=64)
    assert RunResult(ok).held_out_record().values == [0.5, 0.75]
    tested = fake_run(tmp_path / "tested", {"train/loss": [1.0, 0.5], "val/acc": [0.5, 0.75], "test/acc": [0.0, 0.7]},
                      val_split=64)
    with pytest.raises(EvaError, match=r"evaluated the test split \(test/acc\)"):
        RunResult(tested).held_out_record()
    on_test = fake_run(tmp_path / "on_test", {"train/loss": [1.0, 0.5], "val/acc": [0.5, 0.75]}, val_split=0)
    with pytest.raises(EvaError, match="validation ran on the test split"):
        RunResult(on_test).held_out_record()
    cut = fake_run(tmp_path / "cut", {"train/loss": [1.0], "val/acc": [0.5]}, val_split=64, max_epochs=1)
    (cut / "config.yaml").write_text(yaml.safe_dump({"data": {"val_split": 64}, "trainer": {"max_epochs": 3}}))
    with pytest.raises(EvaError, match="stopped after epoch 1 of 3"):
        RunResult(cut).held_out_record()


def test_space_values_reach_the_config_as_written(tmp_path):
    """List-valued choices come back as lists (Optuna stores them as JSON), integer ranges as integers on the step."""
    import optuna

    space_file = tmp_path / "space.yaml"
    space_file.write_text("model.init_args.widths: [[8, 16], [4, 4]]\ndata.batch_size: {low: 64, high: 256, step: 64}\n"
                          "model.init_args.lr: {low: 0.01, high: 0.3, log: true}\n")
    space = tune.read_space(space_file)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        values = {key: tune.suggest(trial, key, spec) for key, spec in space.items()}
        assert values["model.init_args.widths"] in ([8, 16], [4, 4])
        assert isinstance(values["data.batch_size"], int) and values["data.batch_size"] in (64, 128, 192, 256)
        assert isinstance(values["model.init_args.lr"], float) and 0.01 <= values["model.init_args.lr"] <= 0.3
        assert tune.fit_args(values)[0] == f"--model.init_args.widths={json.dumps(values['model.init_args.widths'])}"
        stored = {k: tune.decode(space[k], v) for k, v in trial.params.items()}
        assert stored == values  # what --show and --apply read back from the study
        study.tell(trial, 0.5)
    assert tune.grid_points(space) is None  # a range: no grid
    assert len(tune.grid_points({"a": [1, 2], "b": [[1], [2], [3]]})) == 6


SPACES = sorted((ROOT / "configs" / "tune").glob("*.yaml"))


@pytest.mark.parametrize("space", SPACES, ids=[s.stem for s in SPACES])
def test_each_committed_space_fits_its_config(space, monkeypatch):
    """Each space in configs/tune/ names its command in its header; its keys and split parse with that config."""
    monkeypatch.chdir(ROOT)
    command = next(line for line in space.read_text().splitlines() if line.startswith("# eva tune "))
    configs = re.findall(r"--config (\S+)", command)
    val_split = float(re.search(r"--val_split (\S+)", command).group(1))
    assert re.search(rf"--space {re.escape(str(space.relative_to(ROOT)))}(\s|$)", command) and configs
    tune.check_space(configs, tune.read_space(space), [], val_split)


WORKER = """
import subprocess, sys, types
from eva_lightning.entry import main
from eva_lightning.tools import seeds
def fit(cmd):
    main(cmd[3:])
    return subprocess.CompletedProcess(cmd, 0)
seeds.subprocess = types.SimpleNamespace(run=fit)  # each worker trains in its own process, as in the test above
main(["tune", *sys.argv[1:]])
"""


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(in_tmp, tiny_config):
    """Two processes started together on one study (one SQLite file) run the two grid points between them."""
    import optuna

    args = ["--config", str(tiny_config), "--space", "space.yaml", "--seeds", "1", "--trials", "1"]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, *args], cwd=in_tmp, env=eva_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n".join(o[-3000:] for o in outputs)
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{in_tmp / 'lightning_logs/tune/space.db'}")
    assert sorted((t.state.name, t.params["model.init_args.width"]) for t in study.trials) == [
        ("COMPLETE", 4), ("COMPLETE", 6)]
    assert sorted(p.name for p in (in_tmp / "lightning_logs" / "tune" / "space").iterdir()) == ["trial_0", "trial_1"]


def test_the_committed_study_tables_in_docs_are_generated_from_it(tmp_path):
    """docs/tune/*.md and the copy in docs/mnist.md are ``eva tune --show`` of the committed study files, not typed."""
    studies = sorted((ROOT / "lightning_logs" / "tune").glob("*.db"))
    assert studies, "no committed study under lightning_logs/tune/"
    mnist = (ROOT / "docs" / "mnist.md").read_text()
    for db in studies:
        copy = tmp_path / db.name  # Optuna's storage may write to the file it opens
        shutil.copy(db, copy)
        text = tune.markdown(tune.load_study(db.stem, f"sqlite:///{copy}"))
        assert (ROOT / "docs" / "tune" / f"{db.stem}.md").read_text() == text
        table = text.split("\n", 2)[2].strip()  # without the heading: the docs page has its own
        if db.stem.startswith("s5"):
            assert table in mnist
