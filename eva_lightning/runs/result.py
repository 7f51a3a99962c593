"""Reading a run folder back (:class:`RunResult`). The result of record is the *final* epoch's test accuracy, read
as the run's evaluation protocol (:mod:`eva_lightning.runs.protocol`, from its ``config.yaml``) says."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from eva_lightning.core.errors import EvaError
from eva_lightning.runs.layout import CONFIG, EVENTS, FIT_RESULT, RUN_INFO, resolve
from eva_lightning.runs.protocol import Protocol

#: ``tag -> [(step, value, wall_time), ...]`` as the event files hold them
Scalars = dict[str, list[tuple[int, float, float]]]


def read_scalars(run: Path) -> Scalars:
    """Every scalar tag of the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: Scalars = {}
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it logs each file it opens at INFO
    for events in sorted({p.parent for p in Path(run).glob(EVENTS)}):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value, e.wall_time) for e in acc.Scalars(tag))
    return scalars


def holds_results(run: Path) -> bool:
    """Whether a run folder holds what a failed start must never delete: a checkpoint, or events of a finished
    epoch (an epoch-level metric: ``train/loss``, ``train/acc``, ``val/*``, ``test/*``)."""
    return any(Path(run).rglob("*.ckpt")) or any(
        tag in ("train/loss", "train/acc") or tag.startswith(("val/", "test/")) for tag in read_scalars(run))


def best(pts: list[tuple[Any, float]], tag: str) -> tuple[Any, float]:
    """The ``(x, value)`` of lowest loss, else of highest value (accuracy)."""
    return (min if "loss" in tag else max)(pts, key=lambda p: p[1])


class Record(NamedTuple):
    """A finished run's result of record (:meth:`RunResult.result_of_record`)."""

    metric: str  # test/acc or val/acc
    values: list[float]  # per epoch, oldest first (test/acc: once, after fit); the last is the result
    epochs: int  # epochs trained


class RunResult:
    """One run folder read back; each file is read at most once, when first needed.

    Args:
        run: the run directory, or its run-name folder (the newest version is taken).
    """

    def __init__(self, run: str | Path) -> None:
        self.path = resolve(run)

    @cached_property
    def scalars(self) -> Scalars:
        return read_scalars(self.path)

    @cached_property
    def config_text(self) -> str:
        """The resolved ``config.yaml`` as written, "" when it is missing."""
        path = self.path / CONFIG
        return path.read_text() if path.exists() else ""

    @cached_property
    def config(self) -> dict[str, Any]:
        """The resolved ``config.yaml``, or {} when it is missing or unreadable."""
        try:
            cfg = yaml.safe_load(self.config_text)  # None for an empty or missing file
        except yaml.YAMLError:
            return {}
        return cfg if isinstance(cfg, dict) else {}

    @cached_property
    def run_info_documents(self) -> list[dict[str, Any]]:
        """The documents of ``run_info.yaml``, oldest first (one per start); [] when it is missing."""
        path = self.path / RUN_INFO
        return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)] if path.exists() else []

    @cached_property
    def fit(self) -> dict[str, Any]:
        """``fit_result.json``, or {} when fitting did not end here."""
        path = self.path / FIT_RESULT
        return json.loads(path.read_text()) if path.exists() else {}

    @cached_property
    def protocol(self) -> Protocol:
        """How the run was evaluated, as its ``config.yaml`` records it."""
        return Protocol.of_config(self.config)

    @property
    def val_split(self) -> float:
        """``data.val_split``: 0 (the default) means validation ran on the test split."""
        return self.protocol.val_split

    @property
    def max_epochs(self) -> int | None:
        trainer = self.config.get("trainer")
        return int(trainer["max_epochs"]) if isinstance(trainer, dict) and trainer.get("max_epochs") else None

    def run_info(self) -> dict[str, Any]:
        """The newest ``fit`` document of ``run_info.yaml``, with the first start's time and the number of starts."""
        docs = self.run_info_documents
        fits = [d for d in docs if d.get("stage") == "fit"] or docs
        return {**fits[-1], "started": fits[0].get("started"), "starts": len(fits)} if fits else {}

    def fit_starts(self) -> list[float]:
        """When each start of the fit began (POSIX seconds, oldest first)."""
        try:
            return sorted(datetime.fromisoformat(str(d["started"])).timestamp() for d in self.run_info_documents
                          if d.get("stage") == "fit" and d.get("started"))
        except (yaml.YAMLError, ValueError):
            return []

    def trained_seconds(self) -> float | None:
        """Seconds from the first to the last logged scalar, less the pauses between starts of a resumed run."""
        times = sorted(t for points in self.scalars.values() for _, _, t in points)
        if not times:
            return None
        restarts = [s for s in self.fit_starts() if s > times[0]]
        total, begin = 0.0, times[0]
        for before, after in zip(times, times[1:]):
            if any(before < s <= after for s in restarts):
                total, begin = total + before - begin, after
        return round(total + times[-1] - begin, 1)

    @cached_property
    def epoch_at(self) -> dict[int, int]:
        """step -> epoch, from Lightning's ``epoch`` scalar."""
        return {step: int(value) for step, value, _ in self.scalars.get("epoch", [])}

    def points(self, tag: str) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of ``tag`` by step; a resumed run repeats steps across event files: the later point wins."""
        return sorted({step: value for step, value, _ in self.scalars.get(tag, [])}.items())

    def curve(self, tag: str) -> list[tuple[int, float]]:
        """:meth:`points` with x = the epoch where Lightning logged one, else the step."""
        return [(self.epoch_at.get(step, step), value) for step, value in self.points(tag)]

    def final(self, tag: str) -> float | None:
        """The value of ``tag`` at its last step."""
        return pts[-1][1] if (pts := self.points(tag)) else None

    def best(self, tag: str) -> tuple[float, str] | None:
        """Best value of ``tag`` and where (``"epoch N"``, else ``"step N"``); None unless the protocol allows one."""
        pts = self.points(tag)
        if not pts or not self.protocol.may_choose_best(tag):
            return None
        step, value = best(pts, tag)
        return value, (f"epoch {self.epoch_at[step]}" if step in self.epoch_at else f"step {step}")

    @property
    def epochs(self) -> int | None:
        """Epochs trained: as ``fit_result.json`` recorded them, else the epoch of the last per-epoch training loss
        (a test after fit is logged one epoch further on)."""
        if self.fit.get("epochs") is not None:
            return int(self.fit["epochs"])
        per_epoch = self.points("train/loss") or self.points(self.protocol.tag_of_record(self.scalars))
        return self.epoch_at.get(per_epoch[-1][0], len(per_epoch) - 1) + 1 if per_epoch else None

    def result_of_record(self) -> Record:
        """The final test accuracy of a finished run (:meth:`Protocol.tag_of_record`), with its per-epoch values;
        EvaError where there is none, or where the run stopped before ``trainer.max_epochs`` (the final epoch of a
        fixed schedule is the figure of record, not whatever epoch a crash left)."""
        run, split = self.path, self.val_split
        if not self.scalars:
            raise EvaError(f"{run}: no TensorBoard scalars (is it a run directory of eva fit?)")
        metric = self.protocol.tag_of_record(self.scalars)
        if metric not in self.scalars:
            raise EvaError(f"{run}: validation was held out of the training set (data.val_split={split}) but the run "
                           "logged no test/acc, so it holds no test accuracy to tabulate" if self.protocol.held_out else
                           f"{run}: neither test/acc nor val/acc was logged; logged tags: {sorted(self.scalars)}")
        epochs = self.epochs
        if self.max_epochs and epochs < self.max_epochs:
            raise EvaError(f"{run}: stopped after epoch {epochs} of {self.max_epochs}; its last epoch is not the "
                           "schedule's final one: finish it (eva fit ... --ckpt_path <its checkpoints/last.ckpt>) or "
                           "leave it out")
        return Record(metric, [v for _, v in self.points(metric)], epochs)

    def held_out_record(self) -> Record:
        """The final-epoch ``val/acc`` of a finished run that held out a validation split and never read the test
        split: what a choice between settings may read (``eva tune``); never a test accuracy."""
        run = self.path
        if not self.protocol.held_out:
            raise EvaError(f"{run}: validation ran on the test split (data.val_split=0): its val/acc is a test "
                           "accuracy, which no choice may read; hold out part of the training set (--data.val_split 5000)")
        tested = sorted(tag for tag in self.scalars if tag.startswith("test/"))
        if tested:
            raise EvaError(f"{run}: the run evaluated the test split ({', '.join(tested)}): a choice must not see it; "
                           "tuning runs fit with --test_after_fit false")
        if "val/acc" not in self.scalars:
            raise EvaError(f"{run}: no val/acc logged; logged tags: {sorted(self.scalars)}")
        epochs = self.epochs
        if self.max_epochs and epochs < self.max_epochs:
            raise EvaError(f"{run}: stopped after epoch {epochs} of {self.max_epochs}; its last epoch is not the "
                           "schedule's final one")
        return Record("val/acc", [v for _, v in self.points("val/acc")], epochs)
