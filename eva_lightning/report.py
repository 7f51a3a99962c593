"""``report.md`` per run: config, metrics, epochs, wall time, machine, versions and figures.

    eva report lightning_logs/s5/version_0      # (re)write report.md of a run
    eva report lightning_logs/s5                # the latest version of that run

:class:`RunReport` (a default callback of ``eva fit``) records wall time, epochs and status in
``fit_result.json`` and writes ``report.md`` when fitting ends; everything else is read back
from the run directory itself (``config.yaml``, ``run_info.yaml`` with machine and versions, the
TensorBoard event file, the PNG figures other callbacks saved), so ``eva report`` rebuilds the
same page from a copied run.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback

from eva_lightning import runinfo
from eva_lightning.errors import EvaError

log = logging.getLogger(__name__)

REPORT_NAME = "report.md"
RESULT_NAME = "fit_result.json"  # written by RunReport: wall time, epochs, steps, status
#: metrics shown first, in this order; any other scalar follows alphabetically.
METRIC_ORDER = ("val/acc", "val/loss", "train/acc", "train/loss", "test/acc", "test/loss", "lr")
#: figure sections: (title, file-name pattern), first match wins; the rest go under "Other figures".
FIGURE_GROUPS = (
    ("Training curves", r"curves"),
    ("LR finder", r"lr_find"),
    ("Misclassified images", r"misclassified"),
    ("Confusion matrix", r"confusion"),
    ("GradCAM", r"gradcam"),
)


# --------------------------------------------------------------------------- reading a run back
def resolve_run_dir(path: str | Path) -> Path:
    """The run directory itself, or the newest ``version_N`` inside a run-name folder."""
    run = Path(path).expanduser()
    if not run.is_dir():
        raise EvaError(f"{run} is not a folder: give a run directory such as lightning_logs/s5/version_0")
    if any(run.glob("events.out.tfevents.*")) or (run / "config.yaml").exists():
        return run
    versions = [p for p in run.glob("version_*") if p.is_dir() and p.name.split("_")[-1].isdigit()]
    if not versions:
        raise EvaError(f"{run} holds no run: expected TensorBoard event files or version_N folders in it")
    return max(versions, key=lambda p: int(p.name.split("_")[-1]))


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """The newest ``fit`` document of ``run_info.yaml`` (a resumed run appends one per start)."""
    path = run_dir / runinfo.FILE
    if not path.exists():
        return {}
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    fits = [d for d in docs if d.get("stage") == "fit"] or docs
    return {**fits[-1], "started": fits[0].get("started"), "starts": len(fits)} if fits else {}


def machine_rows(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """Header rows for the machine a run used (the host name is left out of the published page)."""
    m = info.get("machine") or {}
    if not m:
        return [("machine", f"not recorded (no {runinfo.FILE} in the run directory)")]
    gpus = m.get("gpus") or []
    gpu = ", ".join(f"{n} × {name}" for name, n in Counter(gpus).items()) if gpus else "none"
    code = info.get("code") or {}
    commit = code.get("commit")
    return [
        ("os", m.get("os")),
        ("cpu", f"{m.get('cpu')} ({m.get('cpu_count')} logical cores)"),
        ("gpu", gpu + (f" (CUDA {m['cuda']})" if m.get("cuda") else "")),
        ("accelerator", f"{m.get('accelerator')}, {m.get('strategy')}, world size {m.get('world_size')}"
         if m.get("accelerator") else None),
        ("precision", m.get("precision")),
        ("code", f"`{commit[:10]}`" + (" (with uncommitted changes)" if code.get("dirty") else "") if commit else None),
        ("command", f"`{' '.join(info['command'])}`" if info.get("command") else None),
    ]


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar tag of the run's event files: ``tag -> [(step, value, wall_time), ...]``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float, float]]] = {}
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it logs each file it opens at INFO
    for events in sorted({p.parent for p in run_dir.glob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value, e.wall_time) for e in acc.Scalars(tag))
    return scalars


def metric_table(scalars: dict[str, list[tuple[int, float, float]]]) -> list[tuple[str, float, str]]:
    """``(tag, final value, best value with its epoch)``: max for accuracies, min for losses."""
    epoch_at = {step: int(v) for step, v, _ in scalars.get("epoch", [])}
    tags = [t for t in METRIC_ORDER if t in scalars]
    skip = ("epoch", "hp_metric")  # Lightning's bookkeeping, not results
    tags += sorted(t for t in scalars if t not in tags and t not in skip and not t.endswith("_step"))
    rows = []
    for tag in tags:
        points = scalars[tag]
        final = points[-1][1]
        best = ""
        kind = tag.rsplit("/", 1)[-1]
        if kind in ("acc", "loss"):
            pick = max if kind == "acc" else min
            step, value, _ = pick(points, key=lambda p: p[1])
            where = f"epoch {epoch_at[step]}" if step in epoch_at else f"step {step}"
            best = f"{_fmt_value(value)} ({where})"
        rows.append((tag, final, best))
    return rows


def figures(run_dir: Path) -> list[tuple[str, list[Path]]]:
    """The run's PNGs grouped into sections, paths relative to ``run_dir``."""
    pngs = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*.png"))
    groups: dict[str, list[Path]] = {title: [] for title, _ in FIGURE_GROUPS}
    other: list[Path] = []
    for png in pngs:
        for title, pattern in FIGURE_GROUPS:
            if re.search(pattern, png.as_posix(), re.IGNORECASE):
                groups[title].append(png)
                break
        else:
            other.append(png)
    out = [(title, files) for title, files in groups.items() if files]
    return out + ([("Other figures", other)] if other else [])


def _natural_key(path: Path) -> list:
    """``misclassified_epoch2`` before ``misclassified_epoch10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def figure_families(files: list[Path]) -> list[list[Path]]:
    """PNGs whose names differ only in numbers (``misclassified_epoch{N}``), each family oldest first."""
    families: dict[str, list[Path]] = {}
    for png in files:
        families.setdefault((png.parent / re.sub(r"\d+", "#", png.name)).as_posix(), []).append(png)
    return [sorted(f, key=_natural_key) for _, f in sorted(families.items())]


# --------------------------------------------------------------------------- writing the page
def _fmt_value(value: float) -> str:
    """Four decimals for accuracies and losses; significant digits for small values such as LRs."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"


def _fmt_seconds(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def _config_summary(config: str) -> dict[str, str]:
    """Model class and data set out of the resolved YAML, for the header table."""
    try:
        cfg = yaml.safe_load(config) or {}
    except yaml.YAMLError:
        return {}
    model = cfg.get("model") or {}
    data = cfg.get("data") or {}
    trainer = cfg.get("trainer") or {}
    out = {}
    if isinstance(model, dict) and model.get("class_path"):
        out["model"] = f"`{model['class_path']}`"
    if isinstance(data, dict) and data.get("dataset"):
        out["data"] = f"{data['dataset']} (batch size {data.get('batch_size')})"
    if isinstance(trainer, dict) and trainer.get("max_epochs") is not None:
        out["max_epochs"] = str(trainer["max_epochs"])
    return out


def write_report(run_dir: str | Path, title: str | None = None) -> Path:
    """Write ``report.md`` in ``run_dir`` from what the run left there; returns its path.

    Args:
        run_dir: the run directory, or its run-name folder (the newest version is taken).
        title: page heading; default ``<run name>/version_N``.
    """
    run = resolve_run_dir(run_dir)
    result = json.loads((run / RESULT_NAME).read_text()) if (run / RESULT_NAME).exists() else {}
    info = read_run_info(run)
    config = (run / "config.yaml").read_text() if (run / "config.yaml").exists() else ""
    scalars = read_scalars(run)

    epochs = result.get("epochs")
    if epochs is None and scalars.get("val/acc"):  # a run still going (or killed): validated epochs
        epochs = len({step for step, _, _ in scalars["val/acc"]})
    elif epochs is None and scalars.get("epoch"):
        epochs = int(max(v for _, v, _ in scalars["epoch"])) + 1
    wall = result.get("wall_time_s")
    all_points = [p for points in scalars.values() for p in points]
    if wall is None and all_points:
        wall = max(p[2] for p in all_points) - min(p[2] for p in all_points)
    started = info.get("started") or (
        datetime.fromtimestamp(min(p[2] for p in all_points), timezone.utc).isoformat(timespec="seconds")
        if all_points else None
    )

    lines = [f"# Run report: {title or f'{run.parent.name}/{run.name}'}", ""]
    head = _config_summary(config)
    rows = [
        ("model", head.get("model")),
        ("data", head.get("data")),
        ("epochs", f"{epochs}" + (f" of {head['max_epochs']}" if "max_epochs" in head else "") if epochs else None),
        ("steps", result.get("global_step")),
        ("wall time", _fmt_seconds(wall) if wall is not None else None),
        ("started (UTC)", started),
        ("status", result.get("status", "running or stopped (no end of fit recorded)")),
        ("starts", info.get("starts") if info.get("starts", 1) > 1 else None),  # resumed runs
    ]
    rows += machine_rows(info)
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows if v not in (None, "")] + [""]

    lines += ["## Metrics", ""]
    table = metric_table(scalars)
    if table:
        lines += ["| metric | final | best |", "|---|---|---|"]
        lines += [f"| `{tag}` | {_fmt_value(final)} | {best} |" for tag, final, best in table]
    else:
        lines.append("No scalars logged.")
    lines.append("")

    groups = figures(run)
    if groups:
        lines += ["## Figures", ""]
        for title, files in groups:
            lines += [f"### {title}", ""]
            for family in figure_families(files):
                newest = family[-1]  # the final state is embedded, earlier epochs are linked
                lines += [f"![{newest.stem}]({newest.as_posix()})", ""]
                if len(family) > 1:
                    earlier = ", ".join(f"[{p.stem}]({p.as_posix()})" for p in family[:-1])
                    lines += [f"Earlier: {earlier}", ""]

    if config:
        lines += [
            "## Configuration", "", "<details><summary>resolved config.yaml</summary>", "", "```yaml",
            config.rstrip(), "```", "", "</details>", "",
        ]
    versions = {k: v for k, v in (info.get("versions") or {}).items() if v}
    if versions:
        lines += ["## Package versions", "", "| package | version |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in versions.items()] + [""]

    path = run / REPORT_NAME
    path.write_text("\n".join(lines))
    return path


class RunReport(Callback):
    """Writes ``fit_result.json`` (wall time, epochs, steps, status) and ``report.md`` when fitting ends.

    Machine, versions and command come from ``run_info.yaml`` (``RunInfo``, another default callback).

    The page is written in ``teardown``, after every callback's ``on_fit_end``, so figures other
    callbacks save at the end of training are on it. ``fast_dev_run`` smoke tests get no report.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self.report_path: Path | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run = runinfo.run_dir(trainer)
        if stage != "fit" or run is None or self._start is None or not trainer.is_global_zero:
            return
        result = dict(
            wall_time_s=round(time.perf_counter() - self._start, 1),
            epochs=trainer.current_epoch,  # epochs completed (the counter ends one past the last)
            global_step=trainer.global_step,
            status="interrupted" if trainer.interrupted else "finished",
        )
        (run / RESULT_NAME).write_text(json.dumps(result, indent=2))
        for logger in trainer.loggers:  # the event file must hold the last epoch before it is read back
            flush = getattr(getattr(logger, "experiment", None), "flush", None)
            if callable(flush):
                flush()
        self.report_path = write_report(run)
        log.info("run report → %s", self.report_path)


def main(argv: list[str] | None = None) -> None:
    """``eva report RUN_DIR``: (re)write ``report.md`` of a finished run."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="eva report", description=main.__doc__)
    parser.add_argument("run_dir", help="a run directory (lightning_logs/<config>/version_N) or its parent")
    args = parser.parse_args(argv)
    path = write_report(args.run_dir)
    log.info("wrote %s", path)
