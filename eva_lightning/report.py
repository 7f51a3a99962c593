"""``report.md`` per run: summary, config, metrics, epochs, wall time, machine, versions and figures.

:class:`RunReport` (a default callback of ``eva fit``) records wall time, epochs and status in
``fit_result.json`` and writes ``report.md`` when fitting (or testing) ends; everything else is
read back from the run directory itself (``config.yaml``, ``run_info.yaml`` with machine and
versions, the TensorBoard event file, the PNG figures other callbacks saved), so ``eva report``
rebuilds the same page from a copied run.

The evaluation protocol shapes what is shown. The result of record is the *final* epoch's test
accuracy. With ``data.val_split: 0`` validation runs on the test split: ``val/*`` are test-split
figures, named "test accuracy", and nothing is called best (a best over epochs would be chosen on
the test set). With ``data.val_split > 0`` fit ends with a test of the final weights
(``test/acc``), and a "best" is shown for the held-out validation split only.
:class:`RunSummary` is that summary: at the top of ``report.md`` and printed when ``eva fit`` /
``eva test`` ends.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from eva_lightning import runs
from eva_lightning.callbacks.hooks import batch_hooks_only_where_used

log = logging.getLogger(__name__)

REPORT_NAME = "report.md"
RESULT_NAME = "fit_result.json"  # written by RunReport: wall time, epochs, steps, status
#: metrics shown first, in this order; any other scalar follows alphabetically.
METRIC_ORDER = ("test/acc", "test/loss", "val/acc", "val/loss", "train/acc", "train/loss", "lr")
#: figure sections: (title, file-name pattern), first match wins; the rest go under "Other figures".
FIGURE_GROUPS = (
    ("Training curves", r"curves"),
    ("LR finder", r"lr_find"),
    ("Misclassified images", r"misclassified"),
    ("Confusion matrix", r"confusion"),
    ("GradCAM", r"gradcam"),
)


# --------------------------------------------------------------------------- reading a run back
def read_run_info(run_dir: Path) -> dict[str, Any]:
    """The newest ``fit`` document of ``run_info.yaml`` (a resumed run appends one per start)."""
    docs = runs.run_info_documents(run_dir)
    fits = [d for d in docs if d.get("stage") == "fit"] or docs
    return {**fits[-1], "started": fits[0].get("started"), "starts": len(fits)} if fits else {}


def machine_rows(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """Header rows for the machine a run used (the host name is left out of the published page)."""
    m = info.get("machine") or {}
    if not m:
        return [("machine", f"not recorded (no {runs.RUN_INFO} in the run directory)")]
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


def metric_table(scalars: runs.Scalars, held_out: bool = False) -> list[tuple[str, float, str]]:
    """``(tag, final value, best value with its epoch)``.

    A best is given only for ``val/acc`` and ``val/loss`` of a run with a held-out validation split
    (``held_out``): there a best epoch is a legitimate choice; on the test split, or for the
    training metrics, it would be a choice made on the numbers being reported.
    """
    tags = [t for t in METRIC_ORDER if t in scalars]
    skip = ("epoch", "hp_metric")  # Lightning's bookkeeping, not results
    tags += sorted(t for t in scalars if t not in tags and t not in skip and not t.endswith("_step"))
    bests = {tag: runs.best_point(scalars, tag) for tag in ("val/acc", "val/loss")} if held_out else {}
    shown = {tag: f"{_fmt_value(b[0])} ({b[1]})" for tag, b in bests.items() if b}
    return [(tag, scalars[tag][-1][1], shown.get(tag, "")) for tag in tags]


@dataclass
class RunSummary:
    """What a user wants to know when a run ends: the final accuracy, how long, where the files are.

    Built from a run directory (:meth:`from_run_dir`) or, for a run without a logger, from the
    trainer (:meth:`from_trainer`); shown as aligned lines on the console (:meth:`text`) and as
    the first table of ``report.md`` (:meth:`markdown`).
    """

    stage: str  # "fit" or "test"
    final: dict[str, float]  # tag -> final value
    val_split: float = 0.0
    best_val_acc: tuple[float, str] | None = None  # held-out split only
    epochs: int | None = None
    max_epochs: int | None = None
    wall_time_s: float | None = None
    status: str | None = None
    run: Path | None = None

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, scalars: runs.Scalars | None = None) -> "RunSummary":
        """``scalars``: the run's events when the caller has read them already (they are the slow part)."""
        run = runs.resolve(run_dir)
        scalars = runs.read_scalars(run) if scalars is None else scalars
        result = _fit_result(run)
        split = runs.val_split(run)
        trained = bool(result) or any(t.startswith("train/") for t in scalars)
        epochs = result.get("epochs")
        if epochs is None and scalars.get("val/acc"):  # a run still going (or killed): validated epochs
            epochs = len({step for step, _, _ in scalars["val/acc"]})
        max_epochs = _config_summary(runs.read_config(run)).get("max_epochs")
        wall = result.get("wall_time_s")
        if trained and (wall is None or len(runs.fit_starts(run)) > 1):  # fit_result.json times its last start only
            wall = runs.trained_seconds(run, scalars)
        return cls(
            stage="fit" if trained else "test",
            final={tag: points[-1][1] for tag, points in scalars.items()},
            val_split=split,
            best_val_acc=runs.best_point(scalars, "val/acc") if split > 0 else None,
            epochs=epochs if trained else None,
            max_epochs=int(max_epochs) if max_epochs else None,
            wall_time_s=wall,
            status=result.get("status") if result else ("running or stopped (no end of fit recorded)" if trained else None),
            run=run,
        )

    @classmethod
    def from_trainer(cls, trainer: L.Trainer, stage: str, split: float = 0.0) -> "RunSummary":
        """From the trainer's last logged metrics (``callback_metrics``): a run that wrote no files."""
        final = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        fit = stage == "fit"
        return cls(stage, final, split, epochs=trainer.current_epoch if fit else None,
                   max_epochs=trainer.max_epochs if fit else None, status="interrupted" if trainer.interrupted else None)

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` lines, test accuracy first."""
        f = self.final
        rows: list[tuple[str, str]] = []
        if self.val_split > 0 or "test/acc" in f:
            acc, loss = f.get("test/acc"), f.get("test/loss")
            where = "final weights, test split" if self.stage == "fit" else "test split"
        else:  # validation ran on the test split: its final epoch is the test result
            acc, loss = f.get("val/acc"), f.get("val/loss")
            where = "final epoch; validation ran on the test split"
        if acc is not None:
            rows.append(("test accuracy", f"{100 * acc:.2f}% ({where})"))
        elif self.stage == "fit":
            rows.append(("test accuracy", "not measured (no test/acc logged)"))
        if loss is not None:
            rows.append(("test loss", f"{loss:.4f}"))
        if self.val_split > 0 and "val/acc" in f:
            best = f"; best {100 * self.best_val_acc[0]:.2f}% at {self.best_val_acc[1]}" if self.best_val_acc else ""
            held_out = f"(held-out {self.val_split:g} of the training set)"
            rows.append(("validation accuracy", f"{100 * f['val/acc']:.2f}% final{best} {held_out}"))
        if self.stage == "fit" and self.epochs is not None:
            of = f" of {self.max_epochs}" if self.max_epochs else ""
            took = f" in {_fmt_seconds(self.wall_time_s)}" if self.wall_time_s is not None else ""
            rows.append(("epochs", f"{self.epochs}{of}{took}"))
        if self.status and self.status != "finished":
            rows.append(("status", self.status))
        if self.run is not None:
            run = _shown(self.run)
            rows += [("run folder", str(run)), ("TensorBoard", f"tensorboard --logdir {run}"),
                     ("report", str(run / REPORT_NAME))]
            if self.stage == "fit" and (self.run / "checkpoints" / "last.ckpt").exists():
                rows.append(("checkpoint", str(run / "checkpoints" / "last.ckpt")))
        return rows

    def text(self) -> str:
        """The console form: a heading and aligned ``label  value`` lines."""
        rows = self.rows()
        width = max((len(k) for k, _ in rows), default=0)
        done = "stopped" if self.status and self.status != "finished" else "finished"
        return "\n".join([f"{self.stage} {done}:"] + [f"  {k:<{width}}  {v}" for k, v in rows])

    def markdown(self) -> list[str]:
        """The ``report.md`` form: a two-column table (without the line pointing at the report itself)."""
        return _table([(k, f"`{v}`" if k == "TensorBoard" else v) for k, v in self.rows() if k != "report"])


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    """A two-column markdown table without a heading."""
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]


def _fit_result(run: Path) -> dict[str, Any]:
    """``fit_result.json`` of the run, or {} when fitting did not end there."""
    return json.loads((run / RESULT_NAME).read_text()) if (run / RESULT_NAME).exists() else {}


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it (no machine's home in a report)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def figures(run_dir: Path) -> list[tuple[str, list[Path]]]:
    """The run's PNGs grouped into sections, paths relative to ``run_dir``."""
    groups: dict[str, list[Path]] = {title: [] for title, _ in (*FIGURE_GROUPS, ("Other figures", ""))}
    for png in sorted(p.relative_to(run_dir) for p in run_dir.rglob("*.png")):
        matches = (title for title, pattern in FIGURE_GROUPS if re.search(pattern, png.as_posix(), re.IGNORECASE))
        groups[next(matches, "Other figures")].append(png)
    return [(title, files) for title, files in groups.items() if files]


def figure_families(files: list[Path]) -> list[list[Path]]:
    """PNGs whose names differ only in numbers (``misclassified_epoch{N}``), each family oldest first (2 before 10)."""
    families: dict[str, list[Path]] = {}
    for png in files:
        families.setdefault((png.parent / re.sub(r"\d+", "#", png.name)).as_posix(), []).append(png)
    natural = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.as_posix())]  # noqa: E731
    return [sorted(f, key=natural) for _, f in sorted(families.items())]


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


def _config_summary(cfg: dict[str, Any]) -> dict[str, str]:
    """Model class, data set and max_epochs out of the resolved config (:func:`runs.read_config`)."""
    model, data, trainer = (cfg.get(k) or {} for k in ("model", "data", "trainer"))
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
    run = runs.resolve(run_dir)
    info = read_run_info(run)
    config = (run / "config.yaml").read_text() if (run / "config.yaml").exists() else ""
    scalars = runs.read_scalars(run)
    times = [t for points in scalars.values() for _, _, t in points]
    summary = RunSummary.from_run_dir(run, scalars)
    started = info.get("started") or (
        datetime.fromtimestamp(min(times), timezone.utc).isoformat(timespec="seconds") if times else None
    )

    lines = [f"# Run report: {title or f'{run.parent.name}/{run.name}'}", ""] + summary.markdown()
    head = _config_summary(runs.read_config(run))
    rows = [
        ("model", head.get("model")),
        ("data", head.get("data")),
        ("steps", _fit_result(run).get("global_step")),
        ("started (UTC)", started),
        ("starts", info.get("starts") if info.get("starts", 1) > 1 else None),  # resumed runs
        *machine_rows(info),
    ]
    lines += ["## Run", ""] + _table([(k, v) for k, v in rows if v not in (None, "")]) + ["## Metrics", ""]
    held_out = summary.val_split > 0
    table = metric_table(scalars, held_out=held_out)
    if not table:
        lines.append("No scalars logged.")
    elif held_out:
        lines += [
            f"Final values; best only for the held-out validation split ({summary.val_split:g} of the "
            "training set), where choosing an epoch does not look at the test set.", "",
            "| metric | final | best (held-out validation) |", "|---|---|---|",
        ]
        lines += [f"| `{tag}` | {_fmt_value(final)} | {best} |" for tag, final, best in table]
    else:
        if "val/acc" in scalars:
            lines += ["Validation ran on the test split (`data.val_split: 0`): `val/*` are test-split figures, "
                      "and the final epoch's is the result (no epoch is chosen on them).", ""]
        lines += ["| metric | final |", "|---|---|"] + [f"| `{tag}` | {_fmt_value(final)} |" for tag, final, _ in table]
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


@batch_hooks_only_where_used
class RunReport(Callback):
    """Writes ``fit_result.json`` (wall time, epochs, steps, status) and ``report.md`` when fitting ends.

    The page is written in ``teardown``, after every callback's ``on_fit_end``, so figures other
    callbacks save at the end of training are on it. It is written again when a test ends in the
    same run folder (the final test after a fit with a held-out split, or ``eva test`` with a
    logger), so ``test/acc`` is on it. ``fast_dev_run`` smoke tests get no report.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self.report_path: Path | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run = runs.run_dir(trainer)
        if stage not in ("fit", "test") or run is None or not trainer.is_global_zero:
            return
        if stage == "fit":
            if self._start is None:
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
        log.debug("run report → %s", self.report_path)  # `eva` prints it in the end-of-run summary

