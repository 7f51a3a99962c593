"""Runs on disk: a trainer's run folder, the newest ``version_N`` of a run name, the TensorBoard
scalars of a run and their final/best values. Report, compare, predict, resume (``--ckpt_path
last``), ``eva seeds`` and ``benchmarks/summarize_runs.py`` read runs through this module only.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import lightning as L
import yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from eva_lightning.errors import EvaError

log = logging.getLogger(__name__)

#: ``tag -> [(step, value, wall_time), ...]`` as the event files hold them
Scalars = dict[str, list[tuple[int, float, float]]]
EVENTS = "events.out.tfevents.*"
#: written by :mod:`eva_lightning.runinfo`, one YAML document per start of a fit (a resumed run has several)
RUN_INFO = "run_info.yaml"


def run_dir(trainer: L.Trainer) -> Path | None:
    """The run's folder for files beside its logs; None under ``fast_dev_run`` or without a logger.

    Without a logger Lightning's log dir is the working directory, not a run's folder: nothing
    is written there. This is rank 0's folder, read from its logger as ``trainer.log_dir`` does but
    without that property's broadcast, so rank 0 may call it alone (a collective called by one rank
    of several hangs, or fails once the others have exited). Other ranks' loggers may have picked
    another version number: only rank 0 writes files.
    """
    if not trainer.loggers or trainer.fast_dev_run:
        return None
    logger = trainer.loggers[0]  # trainer.logger
    log_dir = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
    return None if log_dir is None else Path(log_dir)


def version_number(path: Path) -> int | None:
    """N of a ``version_N`` folder, else None."""
    m = re.fullmatch(r"version_(\d+)", Path(path).name)
    return int(m.group(1)) if m else None


def newest_version(root: Path, holds: Callable[[Path], bool] = Path.is_dir) -> Path | None:
    """The ``root/version_N`` of highest N for which ``holds(folder)`` is true, else None."""
    found = [p for p in Path(root).glob("version_*") if version_number(p) is not None and holds(p)]
    return max(found, key=version_number, default=None)


def holds_run(path: Path) -> bool:
    return any(path.glob(EVENTS)) or (path / "config.yaml").exists()


def resolve(path: str | Path) -> Path:
    """The run directory itself, or the newest ``version_N`` holding a run inside a run-name folder."""
    run = Path(path).expanduser()
    if not run.is_dir():
        raise EvaError(f"{run} is not a folder: give a run directory such as lightning_logs/s5/version_0")
    if holds_run(run):
        return run
    newest = newest_version(run, holds_run)
    if newest is None:
        raise EvaError(f"{run} holds no run: no TensorBoard event files or config.yaml in it or its version_N folders")
    return newest


def seed_runs(path: str | Path) -> list[Path]:
    """The ``seed_N`` runs of a folder ``eva seeds`` wrote (``lightning_logs/s5``), by N; [] for any other path."""
    path = Path(path)
    if not path.is_dir() or (path / "config.yaml").exists():
        return []
    return sorted((d for d in path.glob("seed_*") if d.is_dir() and d.name[5:].isdigit()), key=lambda d: int(d.name[5:]))


def name(run: Path) -> str:
    """``<run name>/version_N`` of a version folder, else the folder's name."""
    return f"{run.parent.name}/{run.name}" if version_number(run) is not None else run.name


def read_scalars(run: Path) -> Scalars:
    """Every scalar tag of the run's event files: ``tag -> [(step, value, wall_time), ...]``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: Scalars = {}
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it logs each file it opens at INFO
    for events in sorted({p.parent for p in Path(run).glob(EVENTS)}):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value, e.wall_time) for e in acc.Scalars(tag))
    return scalars


def run_info_documents(run: Path) -> list[dict[str, Any]]:
    """The documents of the run's ``run_info.yaml``, oldest first (one per start); [] when it is missing."""
    path = Path(run) / RUN_INFO
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)] if path.exists() else []


def fit_starts(run: Path) -> list[float]:
    """When each start of the run's fit began (POSIX seconds, oldest first), from ``run_info.yaml``."""
    try:
        return sorted(datetime.fromisoformat(str(d["started"])).timestamp() for d in run_info_documents(run)
                      if d.get("stage") == "fit" and d.get("started"))
    except (yaml.YAMLError, ValueError):
        return []


def trained_seconds(run: Path, scalars: Scalars) -> float | None:
    """Seconds from the run's first to its last logged scalar, less the pauses of a resumed run.

    Each start after the first (:func:`fit_starts`) opens a new span and the spans are summed: a run
    killed and resumed an hour later trained for its spans, not for the hour between them.
    """
    times = sorted(t for points in scalars.values() for _, _, t in points)
    if not times:
        return None
    restarts = [s for s in fit_starts(run) if s > times[0]]
    total, begin = 0.0, times[0]
    for before, after in zip(times, times[1:]):
        if any(before < s <= after for s in restarts):
            total, begin = total + before - begin, after
    return round(total + times[-1] - begin, 1)


def read_config(run: Path) -> dict[str, Any]:
    """The run's resolved ``config.yaml`` (LightningCLI's), or {} when it is missing or unreadable."""
    path = Path(run) / "config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
    except yaml.YAMLError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def val_split(run: Path) -> float:
    """``data.val_split`` of the run's ``config.yaml``: 0 (the default) means validation ran on the test split."""
    try:
        return float((read_config(run).get("data") or {}).get("val_split") or 0.0)
    except (AttributeError, TypeError, ValueError):
        return 0.0


# --------------------------------------------------------------------------- final and best values
def epoch_at(scalars: Scalars) -> dict[int, int]:
    """step -> epoch, from Lightning's ``epoch`` scalar."""
    return {step: int(value) for step, value, _ in scalars.get("epoch", [])}


def points(scalars: Scalars, tag: str) -> list[tuple[int, float]]:
    """``[(step, value), ...]`` of ``tag`` by step; a resumed run repeats steps across event files: the later point wins."""
    return sorted({step: value for step, value, _ in scalars.get(tag, [])}.items())


def curve(scalars: Scalars, tag: str) -> list[tuple[int, float]]:
    """``points`` with x = the epoch where Lightning logged one, else the step."""
    epochs = epoch_at(scalars)
    return [(epochs.get(step, step), value) for step, value in points(scalars, tag)]


def best(pts: list[tuple[int, float]], tag: str) -> tuple[int, float]:
    """The ``(x, value)`` of lowest loss, else of highest value (accuracy)."""
    return (min if "loss" in tag else max)(pts, key=lambda p: p[1])


def best_point(scalars: Scalars, tag: str) -> tuple[float, str] | None:
    """Best value of ``tag`` and where: ``(value, "epoch N")`` (``"step N"`` without an epoch scalar)."""
    pts = points(scalars, tag)
    if not pts:
        return None
    step, value = best(pts, tag)
    epochs = epoch_at(scalars)
    return value, (f"epoch {epochs[step]}" if step in epochs else f"step {step}")
