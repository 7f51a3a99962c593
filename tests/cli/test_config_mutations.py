"""A systematic net for bad input (issue #36): every shipped config, mutated, run through ``eva fit`` in-process on
tiny data. Each outcome is a working run or exactly one ``error:`` line (exit 2), never another exception, and a
refused run leaves no run folder behind.

Mutations (hypothesis): wrong types, zero and negative numbers, empty lists, unknown and missing keys, wrong nesting,
values as strings, at any place of the composed config (transform arguments and callback arguments included).

CI runs a fixed, small set (``derandomize``). A longer, random search for local use::

    EVA_MUTANTS=300 .venv/bin/python -m pytest -q tests/cli/test_config_mutations.py

(hypothesis prints the failing mutant and how to reproduce it).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import CONFIGS, read_config, write_cifar_jpeg, write_mnist

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from eva_lightning.entry import main  # noqa: E402

LONG_RUN = int(os.environ.get("EVA_MUTANTS", "0"))
#: what keeps a mutant's run to one small CPU step: the machine, one batch, no LR range test (model.lr set)
HARNESS = [
    "--data.download", "false", "--data.num_workers", "0",
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
    "--trainer.precision", "32-true", "--trainer.max_steps", "1", "--trainer.limit_train_batches", "1",
    "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1", "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--model.init_args.compile", "false", "--model.init_args.lr", "0.01",
]
WRONG_TYPES = ("abc", [], {}, 2.5, None)

Path_ = tuple  # a place in the config: keys and list indices


def places(value: Any, at: Path_ = ()) -> list[Path_]:
    """Every place in a nested dict/list config (the containers themselves included, the root not)."""
    out = [at] if at else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        out += places(item, (*at, key))
    return out


def _get(cfg: Any, at: Path_) -> Any:
    for key in at:
        cfg = cfg[key]
    return cfg


@st.composite
def mutants(draw) -> tuple[Path, dict, str]:
    """(a shipped config, its composed dict mutated once, what was done)."""
    config = draw(st.sampled_from(CONFIGS))
    cfg = copy.deepcopy(read_config(config))
    at = draw(st.sampled_from(places(cfg)))
    parent, key = _get(cfg, at[:-1]), at[-1]
    value = parent[key]
    kinds = ["wrong_type", "missing_key", "wrong_nesting"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        kinds += ["zero", "negative"]
    if isinstance(value, (int, float, bool)):
        kinds.append("as_string")
    if isinstance(value, list):
        kinds.append("empty_list")
    if isinstance(value, dict):
        kinds.append("unknown_key")
    kind = draw(st.sampled_from(kinds))
    if kind == "wrong_type":
        parent[key] = draw(st.sampled_from([v for v in WRONG_TYPES if type(v) is not type(value)]))
    elif kind == "zero":
        parent[key] = type(value)(0)
    elif kind == "negative":
        parent[key] = -abs(value) if value else -1
    elif kind == "as_string":
        parent[key] = str(value).lower() if isinstance(value, bool) else str(value)
    elif kind == "empty_list":
        parent[key] = []
    elif kind == "unknown_key":
        value[draw(st.sampled_from(["bogus", f"{at[-1]}_x"]))] = 1
    elif kind == "missing_key":
        del parent[key]
    elif isinstance(parent, dict) and len(at) > 1 and isinstance(_get(cfg, at[:-2]), dict):
        _get(cfg, at[:-2])[key] = parent.pop(key)  # one level up
    else:
        parent[key] = {str(key): value}  # one level down
    return config, cfg, f"{kind} at {'.'.join(map(str, at))}"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mutations")
    return {"mnist": write_mnist(root / "mnist", n_train=64, n_test=32),
            "cifar10": write_cifar_jpeg(root / "cifar", per_class=(4, 2))}


def run_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_dir())


@settings(max_examples=LONG_RUN or 16, derandomize=not LONG_RUN, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutant=mutants())
def test_a_mutated_config_is_a_working_run_or_one_error_line(mutant, tiny_data):
    config, cfg, what = mutant
    dataset = read_config(config).get("data", {}).get("dataset", "mnist")
    with tempfile.TemporaryDirectory() as tmp:
        work, runs = Path(tmp) / "work", Path(tmp) / "runs"
        work.mkdir()
        path = Path(tmp) / config.name  # the run's name is the config's stem, as for the shipped file
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        err = io.StringIO()
        code = 0
        with contextlib.chdir(work), contextlib.redirect_stderr(err):
            try:
                main(["fit", "--config", str(path), "--data.data_dir", str(tiny_data[dataset]),
                      "--trainer.default_root_dir", str(runs), *HARNESS])
            except SystemExit as exc:
                code = exc.code
        errors = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
        hypothesis.event("a working run" if code == 0 else "one error line")  # --hypothesis-show-statistics
        where = f"{config.name}, {what}: exit {code}\n{err.getvalue()[-3000:]}"
        assert "Traceback" not in err.getvalue(), where
        assert list(work.iterdir()) == [], f"{where}\nwrote into the working directory"
        if code == 0:
            assert list(runs.glob("*/version_0/checkpoints/last.ckpt")), f"{where}\nno checkpoint from a working run"
        else:
            assert code == 2 and len(errors) == 1, where
            assert run_folders(runs) == [], f"{where}\nleft {run_folders(runs)}"
