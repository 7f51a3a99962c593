"""Where things live in a run folder (``lightning_logs/<name>/version_N`` or ``.../seed_N``): every name of that
layout is here, and everything else asks this module."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Callable

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from eva_lightning.core.checkpoints import LAST  # "last.ckpt": defined below runs/ (core/checkpoints.py names it too)
from eva_lightning.core.errors import EvaError

EVENTS = "events.out.tfevents.*"  # TensorBoard's scalars and images
CONFIG = "config.yaml"  # the resolved configuration, written by LightningCLI
RUN_INFO = "run_info.yaml"  # command, code, versions, machine: one YAML document per start of a fit
FIT_RESULT = "fit_result.json"  # wall time, epochs, steps, status: written when fitting ends
REPORT = "report.md"
LOG_ROOT = "lightning_logs"  # the default logger's save_dir: runs are LOG_ROOT/<run name>/version_N
CHECKPOINTS = "checkpoints"  # last.ckpt and, with a held-out split, best-*.ckpt; figures are the PNGs anywhere else


def run_name(configs: list[str | Path]) -> str:
    """The run name of ``eva fit --config A --config B``: the stem of the last config (``lightning_logs/B/...``)."""
    return Path(str(configs[-1])).stem


def last_checkpoint(run: str | Path) -> Path:
    """``<run>/checkpoints/last.ckpt`` (whether or not it exists)."""
    return Path(run) / CHECKPOINTS / LAST


def run_dir(trainer: L.Trainer) -> Path | None:
    """The run's folder (None under ``fast_dev_run`` or without a logger), read from the logger without ``log_dir``'s
    broadcast, so rank 0 may call it alone (a collective called by one rank hangs); only rank 0 writes files."""
    if not trainer.loggers or trainer.fast_dev_run:
        return None
    logger = trainer.loggers[0]  # trainer.logger
    log_dir = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
    return None if log_dir is None else Path(log_dir)


#: why creating a folder failed, by errno, in words (else the system's own message)
WHY_NOT = {errno.ENAMETOOLONG: "a name in it is too long for this file system",
           errno.EROFS: "the file system is read-only",
           errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.ENOENT: "this file system does not allow creating it (a special file system such as /proc?)",
           errno.EACCES: "this user may not create it", errno.EPERM: "this user may not create it"}


def check_writable(folder: str | Path) -> None:
    """Raise an :class:`EvaError` unless files can be written in ``folder``; leaves nothing behind: the folders it
    tries to create (and a probe file) are removed again, so every way creating them can fail is caught here."""
    folder = Path(folder).expanduser().absolute()
    fix = "choose another with --trainer.default_root_dir DIR (or the logger's save_dir)"
    try:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
    except OSError as exc:  # a name too long to even look up
        raise EvaError(f"cannot write the run's files in {folder}: {WHY_NOT.get(exc.errno, exc.strerror)}; {fix}") from None
    if not existing.is_dir():
        raise EvaError(f"cannot write the run's files in {folder}: {existing} is a file, not a folder; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EvaError(f"cannot write the run's files in {folder}: {existing} is read-only for this user; {fix}")
    created: list[Path] = []
    current = existing
    try:
        for part in folder.relative_to(existing).parts:
            current = current / part
            current.mkdir()
            created.append(current)
        current = folder / f".eva-write-test-{os.getpid()}"  # a probe file
        current.write_bytes(b"")
        current.unlink()
    except OSError as exc:
        why = WHY_NOT.get(exc.errno, exc.strerror or str(exc))
        raise EvaError(f"cannot write the run's files in {folder}: creating {current} failed: {why} "
                       f"([Errno {exc.errno}]); {fix}") from None
    finally:
        for path in reversed(created):
            try:
                path.rmdir()
            except OSError:
                break  # another process put something there meanwhile: it is in use, leave it


def version_number(path: Path) -> int | None:
    """N of a ``version_N`` folder, else None."""
    m = re.fullmatch(r"version_(\d+)", Path(path).name)
    return int(m.group(1)) if m else None


def newest_version(root: Path, holds: Callable[[Path], bool] = Path.is_dir) -> Path | None:
    """The ``root/version_N`` of highest N for which ``holds(folder)`` is true, else None."""
    found = [p for p in Path(root).glob("version_*") if version_number(p) is not None and holds(p)]
    return max(found, key=version_number, default=None)


def holds_run(path: Path) -> bool:
    return any(path.glob(EVENTS)) or (path / CONFIG).exists()


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
    if not path.is_dir() or (path / CONFIG).exists():
        return []
    return sorted((d for d in path.glob("seed_*") if d.is_dir() and d.name[5:].isdigit()), key=lambda d: int(d.name[5:]))


def name(run: Path) -> str:
    """``<run name>/version_N`` of a version folder, else the folder's name."""
    return f"{run.parent.name}/{run.name}" if version_number(run) is not None else run.name
