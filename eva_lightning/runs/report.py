"""``report.md`` per run, rebuilt from what the run left in its folder (so also from a copied run; docs/usage.md),
naming test accuracy and best as the evaluation protocol (:mod:`eva_lightning.runs.protocol`) says. The command
``eva report`` is :mod:`eva_lightning.tools.report`."""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L

from eva_lightning.core.disk import writing
from eva_lightning.runs.layout import REPORT, RUN_INFO, last_checkpoint
from eva_lightning.runs.protocol import Protocol
from eva_lightning.runs.result import RunResult

#: metrics shown first, in this order; any other scalar follows alphabetically.
METRIC_ORDER = ("test/acc", "test/loss", "val/acc", "val/loss", "train/acc", "train/loss", "lr")
#: figure sections: (title, file-name pattern), first match wins; the rest go under "Other figures".
FIGURE_GROUPS = (("Training curves", r"curves"), ("LR finder", r"lr_find"), ("Misclassified images", r"misclassified"),
                 ("Confusion matrix", r"confusion"), ("GradCAM", r"gradcam"))


def machine_rows(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """Header rows for the machine a run used (the host name is left out of the published page)."""
    m, code = info.get("machine") or {}, info.get("code") or {}
    if not m:
        return [("machine", f"not recorded (no {RUN_INFO} in the run directory)")]
    gpu = ", ".join(f"{n} × {name}" for name, n in Counter(m.get("gpus") or []).items()) or "none"
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


def metric_table(result: RunResult) -> list[tuple[str, float, str]]:
    """``(tag, final value, best value with its epoch)``; a best only where :meth:`RunResult.best` allows one."""
    scalars = result.scalars
    tags = [t for t in METRIC_ORDER if t in scalars]
    skip = ("epoch", "hp_metric")  # Lightning's bookkeeping, not results
    tags += sorted(t for t in scalars if t not in tags and t not in skip and not t.endswith("_step"))
    shown = {tag: f"{_fmt_value(b[0])} ({b[1]})" for tag in ("val/acc", "val/loss") if (b := result.best(tag))}
    return [(tag, result.final(tag), shown.get(tag, "")) for tag in tags]


def partial_evaluation(trainer: dict[str, Any], stage: str, batch_size: Any) -> str | None:
    """How little of the ``stage`` split a ``limit_{stage}_batches`` (or ``overfit_batches``) left, e.g.
    ``"only 2 batches of 128 (≤ 256 images): trainer.limit_val_batches=2"``; None when all of it was measured."""
    key = "overfit_batches" if trainer.get("overfit_batches") else f"limit_{stage}_batches"
    limit = trainer.get(key)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or (isinstance(limit, float) and limit >= 1.0):
        return None
    if isinstance(limit, float):
        part = f"{100 * limit:g}% of its batches"
    else:
        part = f"{limit} batch" + ("" if limit == 1 else "es")
        if isinstance(batch_size, int) and not isinstance(batch_size, bool):
            part += f" of {batch_size} (≤ {limit * batch_size:,} images)"
    return f"only {part}: trainer.{key}={limit}"


@dataclass
class Headline:
    """The final test accuracy, how long, where the files are: printed when ``eva fit`` / ``eva test`` ends
    (:meth:`text`) and the first table of ``report.md`` (:meth:`markdown`)."""

    stage: str  # "fit" or "test"
    final: dict[str, float]  # tag -> final value
    protocol: Protocol = Protocol()  # the run's evaluation protocol
    best_val_acc: tuple[float, str] | None = None  # held-out split only
    epochs: int | None = None
    max_epochs: int | None = None
    wall_time_s: float | None = None
    status: str | None = None
    run: Path | None = None
    partial: dict[str, str] = field(default_factory=dict)  # "val"/"test" -> :func:`partial_evaluation`, if cut short

    @classmethod
    def from_run(cls, run: RunResult | str | Path) -> "Headline":
        """From a run folder, or a :class:`RunResult` the caller has read already."""
        result = run if isinstance(run, RunResult) else RunResult(run)
        fit = result.fit
        trained = bool(fit) or any(t.startswith("train/") for t in result.scalars)
        wall = fit.get("wall_time_s")
        if trained and (wall is None or len(result.fit_starts()) > 1):  # fit_result.json times its last start only
            wall = result.trained_seconds()
        return cls(
            stage="fit" if trained else "test",
            final={tag: result.final(tag) for tag in result.scalars},
            protocol=result.protocol,
            best_val_acc=result.best("val/acc"),
            epochs=result.epochs if trained else None,
            max_epochs=result.max_epochs,
            wall_time_s=wall,
            status=fit.get("status") if fit else ("running or stopped (no end of fit recorded)" if trained else None),
            run=result.path,
            partial=_partials(result.config.get("trainer"), (result.config.get("data") or {}).get("batch_size")),
        )

    @classmethod
    def from_trainer(cls, trainer: L.Trainer, stage: str, protocol: Protocol = Protocol()) -> "Headline":
        """From the trainer's last logged metrics (``callback_metrics``): a run that wrote no files."""
        final = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        fit = stage == "fit"
        limits = {key: getattr(trainer, key, None) for key in
                  ("limit_val_batches", "limit_test_batches", "overfit_batches")}
        return cls(stage, final, protocol, epochs=trainer.current_epoch if fit else None,
                   max_epochs=trainer.max_epochs if fit else None, status="interrupted" if trainer.interrupted else None,
                   partial=_partials(limits, getattr(trainer.datamodule, "batch_size", None)))

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` lines, test accuracy first."""
        f = self.final
        rows: list[tuple[str, str]] = []
        protocol = self.protocol
        tag = protocol.tag_of_record(f)
        acc, loss = f.get(tag), f.get(tag.replace("acc", "loss"))
        if tag == "test/acc":
            where = "final weights, test split" if self.stage == "fit" else "test split"
        else:  # validation ran on the test split: its final epoch is the test result
            where = "final epoch; validation ran on the test split"
        if (part := self.partial.get("test" if tag == "test/acc" else "val")) is not None:
            where += f"; {part}"
        if acc is not None:
            rows.append(("test accuracy", f"{100 * acc:.2f}% ({where})"))
        elif self.stage == "fit" and protocol.held_out and not protocol.test_after_fit:
            rows.append(("test accuracy", "not measured (--test_after_fit false: the test split was not read)"))
        elif self.stage == "fit":
            rows.append(("test accuracy", "not measured (no test/acc logged)"))
        if loss is not None:
            rows.append(("test loss", f"{loss:.4f}"))
        if protocol.held_out and "val/acc" in f:
            best = f"; best {100 * self.best_val_acc[0]:.2f}% at {self.best_val_acc[1]}" if self.best_val_acc else ""
            held_out = f"(held-out {protocol.val_split:g} of the training set" + (
                f"; {self.partial['val']})" if "val" in self.partial else ")")
            rows.append(("validation accuracy", f"{100 * f['val/acc']:.2f}% final{best} {held_out}"))
        if self.stage == "fit" and self.epochs is not None:
            of = f" of {self.max_epochs}" if self.max_epochs else ""
            took = f" in {_fmt_seconds(self.wall_time_s)}" if self.wall_time_s is not None else ""
            rows.append(("epochs", f"{self.epochs}{of}{took}"))
        if self.status and self.status != "finished":
            rows.append(("status", self.status))
        if self.run is not None:
            run = _shown(self.run)
            rows += [("run folder", str(run)), ("TensorBoard", f"tensorboard --logdir {shlex.quote(str(run))}"),
                     ("report", str(run / REPORT))]
            if self.stage == "fit" and last_checkpoint(self.run).exists():
                rows.append(("checkpoint", str(last_checkpoint(run))))
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


def _partials(trainer: Any, batch_size: Any) -> dict[str, str]:
    """:func:`partial_evaluation` of the validation and test splits, those cut short only."""
    trainer = trainer if isinstance(trainer, dict) else {}
    return {stage: part for stage in ("val", "test") if (part := partial_evaluation(trainer, stage, batch_size))}


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]


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


def _fmt_value(value: float) -> str:
    """Four decimals for accuracies and losses; significant digits for small values such as LRs."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"


def _fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def write_report(run_dir: str | Path, title: str | None = None) -> tuple[Path, Headline]:
    """Write ``report.md`` in ``run_dir`` (as :class:`RunResult` takes it) from what the run left; returns its path
    and its headline. ``title``: the page heading; default ``<run name>/version_N``."""
    run, page, headline = render_report(run_dir, title)
    path = run / REPORT
    with writing(path, then=f"the run's checkpoints and logs are saved; free some space, then write the report again "
                            f"with: eva report {shlex.quote(str(run))}"):
        path.write_text(page)
    return path, headline


def render_report(run_dir: str | Path, title: str | None = None) -> tuple[Path, str, Headline]:
    """The run's folder, its ``report.md`` page (figure links relative to that folder; see :func:`write_report`) and
    the page's headline (what ``eva`` prints last: the run is read once)."""
    result = RunResult(run_dir)
    run, info, scalars = result.path, result.run_info(), result.scalars
    times = [t for points in scalars.values() for _, _, t in points]
    headline = Headline.from_run(result)
    started = info.get("started") or (
        datetime.fromtimestamp(min(times), timezone.utc).isoformat(timespec="seconds") if times else None
    )

    lines = [f"# Run report: {title or f'{run.parent.name}/{run.name}'}", ""] + headline.markdown()
    model, data = (part if isinstance(part := result.config.get(k), dict) else {} for k in ("model", "data"))
    rows = [
        ("model", f"`{model['class_path']}`" if model.get("class_path") else None),
        ("data", f"{data['dataset']} (batch size {data.get('batch_size')})" if data.get("dataset") else None),
        ("steps", result.fit.get("global_step")),
        ("started (UTC)", started),
        ("starts", info.get("starts") if info.get("starts", 1) > 1 else None),  # resumed runs
        *machine_rows(info),
    ]
    lines += ["## Run", ""] + _table([(k, v) for k, v in rows if v not in (None, "")]) + ["## Metrics", ""]
    table = metric_table(result)
    if not table:
        lines.append("No scalars logged.")
    elif result.protocol.held_out:
        lines += [
            f"Final values; best only for the held-out validation split ({result.val_split:g} of the "
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

    if groups := figures(run):
        lines += ["## Figures", ""]
        for title, files in groups:
            lines += [f"### {title}", ""]
            for family in figure_families(files):
                newest = family[-1]  # the final state is embedded, earlier epochs are linked
                lines += [f"![{newest.stem}]({newest.as_posix()})", ""]
                if len(family) > 1:
                    earlier = ", ".join(f"[{p.stem}]({p.as_posix()})" for p in family[:-1])
                    lines += [f"Earlier: {earlier}", ""]

    if result.config_text:
        lines += ["## Configuration", "", "<details><summary>resolved config.yaml</summary>", "", "```yaml",
                  result.config_text.rstrip(), "```", "", "</details>", ""]
    if versions := {k: v for k, v in (info.get("versions") or {}).items() if v}:
        lines += ["## Package versions", "", "| package | version |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in versions.items()] + [""]

    return run, "\n".join(lines), headline
