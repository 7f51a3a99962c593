"""``eva compare RUN_DIR... [--metrics val/loss val/acc] --out fig.png``: several runs' curves in one figure."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from jsonargparse import ArgumentParser

from eva_lightning.core.errors import EvaError
from eva_lightning.runs.layout import name, seed_runs
from eva_lightning.runs.protocol import Protocol
from eva_lightning.runs.result import RunResult, best


@dataclass
class Run:
    """One run's scalars: ``{tag: [(epoch or step, value), ...]}``."""

    name: str
    scalars: dict[str, list[tuple[float, float]]]
    val_split: float = 0.0  # data.val_split of its config: 0 = validation ran on the test split
    seeds: int = 1  # > 1: scalars are means over seed runs, sd their spread (same x)
    sd: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Result:
    """Final value of one metric in one run, and its best where a held-out split may choose one."""

    run: str
    metric: str
    final: float
    final_epoch: float
    best: float | None = None  # only val/* of a run with a held-out validation split
    best_epoch: float | None = None
    val_split: float = 0.0  # the run's data.val_split
    final_sd: float | None = None  # over seeds, for a folder of seed runs
    seeds: int = 1


def read_run(run_dir: str | Path) -> Run:
    """All scalars of a run (x = epoch where logged, else step); a folder of ``seed_N`` runs gives their means."""
    if seeds := seed_runs(run_dir):
        return mean_run(Path(run_dir), [read_run(d) for d in seeds])
    result = RunResult(run_dir)
    return Run(name(result.path), {tag: result.curve(tag) for tag in result.scalars}, result.val_split)


def mean_run(folder: Path, runs: list[Run]) -> Run:
    """Mean and sample standard deviation (n - 1) over ``runs`` of every tag, at each x they all logged."""
    scalars, sd = {}, {}
    for tag in set.intersection(*(set(r.scalars) for r in runs)):
        by_x = [dict(r.scalars[tag]) for r in runs]
        xs = sorted(set.intersection(*(set(b) for b in by_x)))
        values = [[b[x] for b in by_x] for x in xs]
        scalars[tag] = [(x, statistics.fmean(v)) for x, v in zip(xs, values)]
        sd[tag] = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
    return Run(f"{folder.name} ({len(runs)} seeds)", scalars, max(r.val_split for r in runs), len(runs), sd)


def final_values(runs: list[Run], metrics: list[str]) -> list[Result]:
    """Final value per run and metric; best (lowest loss, highest otherwise) only where the protocol allows one."""
    results = []
    for run in runs:
        for metric in metrics:
            if not (points := run.scalars.get(metric)):
                continue
            result = Result(run.name, metric, final=points[-1][1], final_epoch=points[-1][0], val_split=run.val_split,
                            final_sd=run.sd[metric][-1] if run.seeds > 1 else None, seeds=run.seeds)
            if Protocol(run.val_split).may_choose_best(metric):
                result.best_epoch, result.best = best(points, metric)
            results.append(result)
    return results


def compare(run_dirs: list[str | Path], metrics: list[str], out: str | Path) -> list[Result]:
    """Overlay ``metrics`` of ``run_dirs`` (one panel per metric) into ``out``; return final (and best) values."""
    from eva_lightning.analysis.figures import plt

    runs = [read_run(d) for d in run_dirs]
    if missing := [m for m in metrics if not any(m in r.scalars for r in runs)]:
        tags = sorted({t for r in runs for t in r.scalars})
        raise EvaError(f"no run logged {missing}; logged tags: {tags}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for run in runs:
            if points := run.scalars.get(metric):
                x, y = zip(*points)
                line, = ax.plot(x, y, marker="o" if len(points) < 40 else None, markersize=3, label=run.name)
                if run.seeds > 1:
                    band = run.sd[metric]
                    ax.fill_between(x, [v - d for v, d in zip(y, band)], [v + d for v, d in zip(y, band)],
                                    color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set(title=metric, xlabel="epoch" if all("epoch" in r.scalars for r in runs) else "step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return final_values(runs, metrics)


def table(results: list[Result]) -> str:
    """Markdown table of final values, then best ones when some run has a held-out validation split."""
    with_best = any(r.best is not None for r in results)
    head = "| run | metric | final | at epoch |" + (" best (held-out val) | at epoch |" if with_best else "")
    lines = [head, "|---|---|---:|---:|" + ("---:|---:|" if with_best else "")]
    for r in results:
        final = f"{r.final:.4f}" + (f" ± {r.final_sd:.4f}" if r.final_sd is not None else "")
        row = f"| {r.run} | {r.metric} | {final} | {r.final_epoch:g} |"
        if with_best:
            row += f" {r.best:.4f} | {r.best_epoch:g} |" if r.best is not None else " – | – |"
        lines.append(row)
    return "\n".join(lines)


def notes(results: list[Result]) -> list[str]:
    """What ``val/*`` means for the runs whose validation was the test split."""
    on_test = list(dict.fromkeys(r.run for r in results
                                 if not Protocol(r.val_split).held_out and r.metric.startswith("val/")))
    return [f"val/* of {', '.join(on_test)}: the test split (data.val_split 0); the final epoch is the result, "
            "no best is chosen on it"] if on_test else []


def main(argv: list[str] | None = None) -> None:
    """Parse ``eva compare`` arguments, draw the figure, print the table."""
    parser = ArgumentParser(prog="eva compare", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run dirs (lightning_logs/<name> or .../version_N)")
    parser.add_argument("--metrics", nargs="+", default=["val/loss", "val/acc"], help="scalar tags to plot")
    parser.add_argument("--out", default="compare.png", help="figure file")
    args = parser.parse_args(argv)
    results = compare(args.runs, list(args.metrics), args.out)
    print(table(results))
    print("\n".join([*notes(results), f"figure: {args.out}"]))
