"""runs/layout.py: the run folder's names, and finding runs by them."""

from pathlib import Path

import pytest

from eva_lightning.core.errors import EvaError
from eva_lightning.runs import layout
from eva_lightning.runs.layout import (CHECKPOINTS, CONFIG, LAST, LOG_ROOT, last_checkpoint, name, newest_version,
                                       resolve, run_name, seed_runs, version_number)


def test_run_name_is_the_stem_of_the_last_config():
    assert run_name(["configs/s5_base.yaml", Path("configs/s5.yaml")]) == "s5"
    assert run_name(["s11.yaml"]) == "s11"


def test_the_names_of_a_run_folder():
    assert (LOG_ROOT, CHECKPOINTS, LAST) == ("lightning_logs", "checkpoints", "last.ckpt")
    assert last_checkpoint("lightning_logs/s5/version_3") == Path("lightning_logs/s5/version_3/checkpoints/last.ckpt")


def test_the_cli_and_seeds_take_the_names_from_layout():
    from eva_lightning import cli
    from eva_lightning.tools import seeds

    assert cli.LOG_ROOT is layout.LOG_ROOT and seeds.LOG_ROOT is layout.LOG_ROOT
    assert seeds.run_name is run_name


def test_newest_version_and_resolve(tmp_path):
    for n in (0, 2, 10):
        (tmp_path / f"version_{n}").mkdir()
    (tmp_path / "version_x").mkdir()
    assert version_number(tmp_path / "version_10") == 10 and version_number(tmp_path / "version_x") is None
    assert newest_version(tmp_path) == tmp_path / "version_10"
    last_checkpoint(tmp_path / "version_2").parent.mkdir()
    last_checkpoint(tmp_path / "version_2").write_bytes(b"")
    assert newest_version(tmp_path, lambda v: last_checkpoint(v).is_file()) == tmp_path / "version_2"
    with pytest.raises(EvaError, match="holds no run"):
        resolve(tmp_path)
    (tmp_path / "version_2" / CONFIG).write_text("")
    assert resolve(tmp_path) == tmp_path / "version_2" and name(resolve(tmp_path)) == f"{tmp_path.name}/version_2"


def test_seed_runs_in_seed_order(tmp_path):
    for n in (10, 2, 1):
        (tmp_path / f"seed_{n}").mkdir()
    assert [p.name for p in seed_runs(tmp_path)] == ["seed_1", "seed_2", "seed_10"]
    (tmp_path / CONFIG).write_text("")  # a run folder itself holds no seed runs
    assert seed_runs(tmp_path) == []
