"""``eva seeds --config X [--config Y] --seeds 1 2 3 [--out table.md] [-- extra eva fit args]``.

Trains the configuration once per seed (an ``eva fit`` subprocess each) and tabulates each run's result of record
(:meth:`~eva_lightning.runs.result.RunResult.result_of_record`), mean ± sample sd, the *reporting* seeds apart
from a config's ``tuning_seeds``; ``--from-runs DIR...`` only tabulates runs that exist (docs/mnist.md).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from eva_lightning.core.errors import EvaError
from eva_lightning.runs.layout import CHECKPOINTS, LAST, LOG_ROOT, last_checkpoint, run_name, seed_runs
from eva_lightning.runs.result import RunResult


@dataclass
class SeedRun:
    """One run's final-epoch test accuracy."""

    seed: int | None  # seed_everything of the run (None if its config.yaml does not say)
    run_dir: str
    metric: str  # the tag read: test/acc or val/acc
    epochs: int  # epochs the run completed
    final: float  # the metric after the last epoch
    last3: list[float]  # its last three values, oldest first (one when test/acc is tested once, after fit)
    wall_s: float  # seconds trained: first to last logged scalar, less a resumed run's pauses
    tuning_seeds: list[int] | None = None  # the config's tuning_seeds (None: it names none)
    held_out: bool = False  # the run held out a validation split (data.val_split > 0): a run to choose on

    @property
    def tuning(self) -> bool:
        """Whether the run is in-sample: a choice of its configuration saw its seed, or could have (held out)."""
        return self.held_out or (self.tuning_seeds is not None and self.seed in self.tuning_seeds)


def read_seed_run(run_dir: str | Path) -> SeedRun:
    """One run's result of record, read from its TensorBoard events (EvaError if it has none)."""
    result = RunResult(run_dir)
    record = result.result_of_record()
    seed = result.config.get("seed_everything")
    seed = int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None
    tuning = result.config.get("tuning_seeds")
    return SeedRun(seed, str(result.path), record.metric, record.epochs, record.values[-1], record.values[-3:],
                   wall_s=result.trained_seconds(), tuning_seeds=list(tuning) if tuning else None,
                   held_out=result.protocol.held_out)


def mean_sd(runs: list[SeedRun]) -> dict:
    """Mean and sample standard deviation (n - 1; None for one run) of the final accuracies."""
    finals = [r.final for r in runs]
    return {
        "n": len(finals),
        "mean": statistics.mean(finals),
        "sd": statistics.stdev(finals) if len(finals) > 1 else None,
        "min_last3": min(min(r.last3) for r in runs),
    }


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals; – for None."""
    return "–" if value is None else f"{100 * value:.2f}"


def _rows(runs: list[SeedRun]) -> list[str]:
    stats = mean_sd(runs)
    lines = [
        "| seed | run | epochs | final | last 3 epochs | min of last 3 | wall |",
        "| ---: | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    lines += [
        f"| {r.seed if r.seed is not None else '?'} | {r.run_dir} | {r.epochs} | {pct(r.final)} "
        f"| {' / '.join(pct(v) for v in r.last3)} | {pct(min(r.last3))} | {r.wall_s:.0f} s |" for r in runs
    ]
    return lines + ["", f"**mean ± sd (n = {stats['n']}, sample sd): {pct(stats['mean'])} ± {pct(stats['sd'])}**"
                        f"; lowest of any seed's last 3 epochs: {pct(stats['min_last3'])}", ""]


def split_roles(runs: list[SeedRun]) -> tuple[list[SeedRun], list[SeedRun]] | None:
    """``(reporting, tuning)`` runs when a run's config names its ``tuning_seeds``; else None."""
    if not any(r.tuning_seeds is not None for r in runs):
        return None
    return [r for r in runs if not r.tuning], [r for r in runs if r.tuning]


def markdown(runs: list[SeedRun], title: str) -> str:
    """The table: one row per seed, then mean ± sd; reporting and tuning seeds apart when they are known."""
    metrics = sorted({r.metric for r in runs})
    lines = [f"### {title}", "", f"Final-epoch test accuracy (%, `{'`, `'.join(metrics)}`), one run per seed.", ""]
    roles = split_roles(runs)
    if roles is None:
        return "\n".join(lines + _rows(runs))
    reporting, tuning = roles
    chosen_on = sorted({s for r in runs for s in r.tuning_seeds or []})
    if reporting:
        lines += ["#### Reporting seeds: no choice of the configuration saw them (the figure to publish)", "", *_rows(reporting)]
    else:
        lines += ["No reporting seed: every run here is in-sample (see below); train seeds outside the tuning seeds.", ""]
    if tuning:
        lines += [f"#### Tuning seeds: in-sample (the configuration was chosen on seeds {', '.join(map(str, chosen_on)) or '?'}"
                  " on a held-out validation split, or the run held one out)", "", *_rows(tuning)]
    return "\n".join(lines)


def _row(run: SeedRun, roles: bool) -> dict:
    row = asdict(run)
    if roles:
        return row | {"tuning": run.tuning}
    return {k: v for k, v in row.items() if k not in ("tuning_seeds", "held_out")}  # the table as before tuning_seeds


def write_table(runs: list[SeedRun], out: Path, title: str, command: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``out`` (markdown) and ``out`` with suffix ``.json``; return both paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(runs, title)
    if command:
        text += "\nCommand: `" + " ".join(command) + "`\n"
    out.write_text(text)
    roles = split_roles(runs)
    reporting, tuning = roles if roles else (runs, [])
    data = {"title": title, "command": command, **(mean_sd(reporting) if reporting else {"n": 0}),
            **({"tuning": mean_sd(tuning)} if tuning else {}), "runs": [_row(r, bool(roles)) for r in runs]}
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    return out, json_path


def train_seeds(configs: list[str], seeds: list[int], extra: list[str], root: Path, resume: bool,
                name: str | None = None) -> list[Path]:
    """``eva fit`` once per seed into ``root/<name>/seed_N`` (``name``: default the last config's stem); return the
    run directories."""
    name = name or run_name(configs)
    dirs = [root / name / f"seed_{seed}" for seed in seeds]
    for seed, run_dir in zip(seeds, dirs):
        cmd = [sys.executable, "-m", "eva_lightning", "fit", *(a for c in configs for a in ("--config", c))]
        cmd += [
            "--seed_everything", str(seed),
            "--trainer.logger.init_args.save_dir", str(root),
            "--trainer.logger.init_args.name", name,
            "--trainer.logger.init_args.version", f"seed_{seed}",
            *extra,
        ]
        if run_dir.exists():
            if not resume:
                raise EvaError(f"{run_dir} already exists: remove it, tabulate it with --from-runs, or pass --resume "
                               "(finished runs are kept, unfinished ones continue from their last.ckpt)")
            try:
                read_seed_run(run_dir)
                print(f"seed {seed}: {run_dir} is finished, kept", flush=True)
                continue
            except EvaError:
                last = last_checkpoint(run_dir)
                if not last.exists():
                    raise EvaError(f"{run_dir} is unfinished and has no {CHECKPOINTS}/{LAST}: remove it") from None
                cmd += ["--ckpt_path", str(last)]
        print(f"seed {seed}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise EvaError(f"eva fit failed for seed {seed} (its output is above); the run is in {run_dir}")
    return dirs


def split_fit_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """A tool's own arguments and those after ``--``, which go to every ``eva fit`` it starts."""
    argv = list(sys.argv[1:] if argv is None else argv)
    i = argv.index("--") if "--" in argv else len(argv)
    return argv[:i], argv[i + 1 :]


def main(argv: list[str] | None = None) -> None:
    """Parse ``eva seeds`` arguments, train (unless ``--from-runs``), write and print the table."""
    from jsonargparse import ArgumentParser

    argv, extra = split_fit_args(argv)
    parser = ArgumentParser(
        prog="eva seeds", epilog="Arguments after -- go to every `eva fit`, e.g. -- --trainer.max_epochs 2",
        description="Train a config once per seed and tabulate final-epoch test accuracy (mean ± sd).")
    parser.add_argument("--config", action="append", default=[], help="config file (repeat to compose, as eva fit)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds (default 1 2 3)")
    parser.add_argument("--from-runs", nargs="+", metavar="DIR",
                        help="only tabulate these existing run directories (a folder of seed_N runs: all of them)")
    parser.add_argument("--out", help="markdown table (a .json is written beside it); default <runs>/seeds.md")
    parser.add_argument("--root", default=LOG_ROOT, help=f"log root of the new runs (default {LOG_ROOT})")
    parser.add_argument("--resume", action="store_true", help="keep finished seed runs, continue unfinished ones")
    args = parser.parse_args(argv)

    if args.from_runs:
        if args.config or extra:
            raise EvaError("--from-runs only tabulates existing runs: drop --config and the arguments after --")
        run_dirs = [run for path in map(Path, args.from_runs) for run in (seed_runs(path) or [path])]
        title = ", ".join(args.from_runs)
        default_out = run_dirs[0].parent / "seeds.md" if len(run_dirs) > 1 else run_dirs[0] / "seeds.md"
        command = None
    else:
        if not args.config:
            raise EvaError("eva seeds needs --config CONFIG (or --from-runs DIR...)")
        for config in args.config:
            if not Path(config).is_file():
                raise EvaError(f"config {config} does not exist")
        if len(set(args.seeds)) != len(args.seeds):
            raise EvaError(f"--seeds repeats a seed: {args.seeds}")
        root = Path(args.root)
        run_dirs = train_seeds(args.config, args.seeds, extra, root, args.resume)
        title = " + ".join(args.config)
        default_out = root / run_name(args.config) / "seeds.md"
        command = ["eva", "seeds", *(a for c in args.config for a in ("--config", c)), "--seeds", *map(str, args.seeds)]
        command += ["--", *extra] if extra else []
    runs = [read_seed_run(d) for d in run_dirs]
    md, js = write_table(runs, Path(args.out) if args.out else default_out, title, command)
    print(md.read_text())
    print(f"table: {md}\njson:  {js}")
