"""What a run records beside ``config.yaml`` and its events: ``run_info.yaml``, ``fit_result.json``, ``report.md``,
and its figures (:func:`publish`)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure

from eva_lightning.analysis.figures import plt
from eva_lightning.core.disk import writing
from eva_lightning.core.hooks import batch_hooks_only_where_used
from eva_lightning.runs.layout import FIT_RESULT, RUN_INFO, run_dir
from eva_lightning.runs.report import Headline, write_report
from eva_lightning.runs.result import holds_results

log = logging.getLogger(__name__)


def publish(fig: Figure, trainer: L.Trainer, tag: str, filename: str) -> Path:
    """Save ``fig`` as ``<run dir or default_root_dir>/<filename>``, log it as TensorBoard image ``tag``, close it."""
    path = (run_dir(trainer) or Path(trainer.default_root_dir)) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path):
        fig.savefig(path, dpi=fig.dpi)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8
    plt.close(fig)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, rgb, global_step=trainer.global_step, dataformats="HWC")
            logger.experiment.flush()
    log.info("%s: wrote %s", tag, path)
    return path

PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "albumentations", "numpy", "jsonargparse")
CODE_DIR = Path(__file__).resolve().parents[1]


def git_commit(where: Path = CODE_DIR) -> dict[str, Any]:
    """``{commit, dirty}`` of the checkout holding the code, or ``{commit: None}`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return {"commit": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine(trainer: L.Trainer) -> dict[str, Any]:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"host": socket.gethostname(), "os": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "gpus": gpus, "cuda": torch.version.cuda if gpus else None,
            "accelerator": type(trainer.accelerator).__name__, "strategy": type(trainer.strategy).__name__,
            "world_size": trainer.world_size, "precision": str(trainer.precision),
            "deterministic": torch.are_deterministic_algorithms_enabled()}


@batch_hooks_only_where_used
class RunInfo(Callback):
    """Write (on resume, append to) ``run_info.yaml``; a run that fails before it has a result leaves no ``version_N``
    (``eva report``/``compare`` would take it for a run, and it would push the next run's number up)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run = run_dir(trainer)
        if run is None or not trainer.is_global_zero:
            return
        path = run / RUN_INFO
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "stage": str(getattr(stage, "value", stage)),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "cwd": os.getcwd(),
            "seed": os.environ.get("PL_GLOBAL_SEED"),
            "config": "config.yaml",  # the resolved configuration, written beside this file by LightningCLI
            "code": git_commit(),
            "versions": versions(),
            "machine": machine(trainer),
        }
        with writing(path), open(path, "a") as f:
            if f.tell():
                f.write("---\n")
            yaml.safe_dump(info, f, sort_keys=False)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        run = run_dir(trainer)
        if run is None or not trainer.is_global_zero or not run.is_dir():
            return
        for logger in trainer.loggers:  # Lightning finalizes them next: close the event file before it goes
            logger.finalize("failed")
        if not holds_results(run):
            shutil.rmtree(run, ignore_errors=True)
            if run.parent.is_dir() and not any(run.parent.iterdir()):  # the run name's folder, made for it
                run.parent.rmdir()
            log.info("removed %s: the run failed before it had a checkpoint or a finished epoch", run)


@batch_hooks_only_where_used
class RunReport(Callback):
    """Writes ``fit_result.json`` and ``report.md`` in ``teardown``, after every ``on_fit_end`` (their figures are on
    it), and when a test ends in the same folder (so ``test/acc`` is on it). With ``test_follows`` (set by the CLI
    when fit ends by testing) a finished fit leaves ``report.md`` to that test: it is written once."""

    def __init__(self) -> None:
        self._start: float | None = None
        self.report_path: Path | None = None
        self.headline: Headline | None = None  # the report's headline, which `eva` prints last (not read again)
        self.test_follows = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run = run_dir(trainer)
        if stage not in ("fit", "test") or run is None or not trainer.is_global_zero:
            return
        if stage == "fit":
            if self._start is None:
                return
            result = dict(wall_time_s=round(time.perf_counter() - self._start, 1),
                          epochs=trainer.current_epoch,  # epochs completed (the counter ends one past the last)
                          global_step=trainer.global_step, status="interrupted" if trainer.interrupted else "finished")
            with writing(run / FIT_RESULT):
                (run / FIT_RESULT).write_text(json.dumps(result, indent=2))
            if self.test_follows and not trainer.interrupted:
                return
        for logger in trainer.loggers:  # the event file must hold the last epoch before it is read back
            flush = getattr(getattr(logger, "experiment", None), "flush", None)
            if callable(flush):
                flush()
        self.report_path, self.headline = write_report(run)
        log.debug("run report → %s", self.report_path)  # `eva` prints it at the end of the run
