"""``eva tune``: choose a config's settings on held-out validation with Optuna, keep every trial (docs/tools.md).

::

    eva tune --config C --space SPACE.yaml [--study NAME] [--trials N] [--seeds 1 2] [--val_split 5000]
             [--sampler grid|random|tpe] [--storage URL] [-- extra eva fit args]
    eva tune --show STUDY [--out table.md] [--figure fig.png]
    eva tune --apply STUDY [--apply_to FILE]
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eva_lightning.core.errors import EvaError
from eva_lightning.runs.layout import LOG_ROOT
from eva_lightning.runs.result import RunResult
from eva_lightning.tools.seeds import pct, split_fit_args, train_seeds

STUDY_DIR = "tune"  # <root>/tune/<study>.db and the trial runs in <root>/tune/<study>/trial_N/seed_S
ATTR = "eva_tune"  # the study's user attribute holding how it was made (configs, space, seeds, split, ...)
OBJECTIVE = "mean over the tuning seeds of the final-epoch held-out val/acc"
SAMPLERS = ("grid", "random", "tpe")
#: keys a space may not vary: the held-out split, the seeds and the protocol are the same for every trial
FIXED_KEYS = ("data.val_split", "data.seed", "seed_everything", "tuning_seeds", "test_after_fit", "trainer.logger")
#: Optuna's heartbeat: a trial whose process died (no beat for GRACE_S) is failed, and re-run by the next start
HEARTBEAT_S, GRACE_S = 60, 300
SQLITE_TIMEOUT_S = 120  # wait this long for another process's write lock on the SQLite file, not fail at once
OPEN_TRIES = 5  # attempts at opening a storage that another process is creating at the same moment


# --------------------------------------------------------------------------- the search space
def read_space(path: str | Path) -> dict[str, list | dict]:
    """``SPACE.yaml``: ``{dotted key: [choices...] | {low, high, log?, step?}}``, checked."""
    path = Path(path)
    if not path.is_file():
        raise EvaError(f"search space {path} does not exist")
    space = yaml.safe_load(path.read_text())
    if not isinstance(space, dict) or not space:
        raise EvaError(f"{path}: a search space is a mapping of dotted config keys to choices, e.g. "
                       "`model.init_args.dropout: [0.0, 0.02]`")
    for key, spec in space.items():
        where = f"{path}: {key}"
        if any(key == k or str(key).startswith(k + ".") for k in FIXED_KEYS):
            raise EvaError(f"{where} cannot be tuned: the held-out split, the seeds and the protocol are the same for "
                           "every trial (set them with --val_split, --seeds)")
        if isinstance(spec, list):
            if not spec:
                raise EvaError(f"{where}: an empty list of choices")
        elif isinstance(spec, dict):
            if not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log", "step"}:
                raise EvaError(f"{where}: a range is {{low, high}} with optional log and step; got {sorted(spec)}")
            if not spec["low"] < spec["high"]:
                raise EvaError(f"{where}: low {spec['low']} is not below high {spec['high']}")
        else:
            raise EvaError(f"{where}: give a list of choices or a range {{low, high, log, step}}, not {spec!r}")
    return space


def _as_json(spec: list | dict) -> bool:
    """Whether a key's choices are stored as JSON strings: Optuna's choices are scalars, a config's may be lists."""
    return isinstance(spec, list) and not all(v is None or isinstance(v, (bool, int, float, str)) for v in spec)


def _encoded(spec: list) -> list:
    """Choices as Optuna stores them: plain scalars as they are, lists/mappings as JSON strings."""
    return [json.dumps(v) for v in spec] if _as_json(spec) else list(spec)


def decode(spec: list | dict, value: Any) -> Any:
    """A stored parameter back to the config value (a JSON-encoded list/mapping choice to itself)."""
    return json.loads(value) if _as_json(spec) else value


def suggest(trial, key: str, spec: list | dict) -> Any:
    """The trial's value of ``key``, as the config takes it."""
    if isinstance(spec, list):
        return decode(spec, trial.suggest_categorical(key, _encoded(spec)))
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) and isinstance(step, (int, type(None))):
        return trial.suggest_int(key, low, high, step=step or 1, log=log)
    return trial.suggest_float(key, float(low), float(high), step=step, log=log)


def grid_points(space: dict) -> list[dict] | None:
    """Every combination of the choices (encoded), or None when a range makes the space continuous."""
    if not all(isinstance(spec, list) for spec in space.values()):
        return None
    return [dict(zip(space, combo)) for combo in itertools.product(*map(_encoded, space.values()))]


def fit_args(values: dict[str, Any]) -> list[str]:
    """``--key=value`` per setting (the value as JSON, which jsonargparse reads as YAML)."""
    return [f"--{key}={json.dumps(value)}" for key, value in values.items()]


# --------------------------------------------------------------------------- the config, resolved
def resolve_config(configs: list[str], extra: list[str]):
    """The configuration ``eva fit`` would run (jsonargparse's merge of the files and arguments), built into no
    objects: unknown keys and bad values are refused here, with the CLI's one-line errors, before any trial."""
    from eva_lightning.cli import ParsedOnly

    return ParsedOnly([a for c in configs for a in ("--config", c)] + list(extra)).config


def check_space(configs: list[str], space: dict, extra: list[str], val_split: float) -> None:
    """Every key of the space (at its first choice, or its low end) and the split parse with the configs: a misspelled
    key fails here, with the CLI's "did you mean", not in a trial."""
    first = {k: (v[0] if isinstance(v, list) else v["low"]) for k, v in space.items()}
    resolve_config(configs, [*extra, f"--data.val_split={val_split:g}", *fit_args(first)])


# --------------------------------------------------------------------------- the study
def storage_url(root: str | Path, study: str) -> str:
    """The default storage: ``<root>/tune/<study>.db`` (SQLite)."""
    return f"sqlite:///{Path(root) / STUDY_DIR / f'{study}.db'}"


def locate(study: str, storage: str | None, root: str) -> tuple[str, str]:
    """``(study name, storage URL)`` of ``--show/--apply STUDY``: a ``.db`` file, or a name in ``--storage`` or
    the default storage."""
    if study.endswith(".db") or Path(study).is_file():
        if not Path(study).is_file():
            raise EvaError(f"study file {study} does not exist")
        return Path(study).stem, storage or f"sqlite:///{study}"
    url = storage or storage_url(root, study)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise EvaError(f"no study {study}: {url.removeprefix('sqlite:///')} does not exist (give the .db file, or "
                       "--storage URL for a database server)")
    return study, url


def open_storage(url: str):
    """Optuna's RDB storage of ``url``: SQLite waits for another process's lock; trials beat a heartbeat."""
    import optuna
    import sqlalchemy

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    for attempt in range(OPEN_TRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S)
        except sqlalchemy.exc.SQLAlchemyError:
            # two processes creating one new database race to write its schema version: the loser finds it done
            if attempt == OPEN_TRIES - 1:
                raise
            time.sleep(1 + attempt)


def load_study(name: str, url: str):
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise EvaError(f"no study named {name} in {url}") from None
    if ATTR not in study.user_attrs:
        raise EvaError(f"study {name} in {url} was not made by eva tune")
    return study


@dataclass
class Row:
    """One trial as ``--show`` tabulates it."""

    number: int
    state: str  # complete, running, fail, waiting
    values: dict[str, Any]  # key -> config value
    per_seed: dict[int, float]  # seed -> final held-out val/acc
    mean: float | None
    wall_s: float | None  # the trial's wall time (start to end), None while running


def rows(study) -> list[Row]:
    """Every trial of the study, by number."""
    space = study.user_attrs[ATTR]["space"]
    out = []
    for t in study.get_trials(deepcopy=False):  # by number
        per_seed = {int(s): r["val_acc"] for s, r in (t.user_attrs.get("per_seed") or {}).items()}
        wall = t.duration.total_seconds() if t.duration is not None else None
        values = {k: decode(space[k], v) for k, v in t.params.items() if k in space}
        mean = t.value if t.state.name == "COMPLETE" else None
        out.append(Row(t.number, t.state.name.lower(), values, per_seed, mean, wall))
    return out


def chosen(study) -> Row | None:
    """The complete trial of highest mean (ties: the earliest), or None."""
    return max((r for r in rows(study) if r.mean is not None), key=lambda r: (r.mean, -r.number), default=None)


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def markdown(study) -> str:
    """The table of every trial (settings, held-out accuracy per seed and mean, wall time) and how it was made."""
    info = study.user_attrs[ATTR]
    keys, seeds = list(info["space"]), info["seeds"]
    best = chosen(study)
    lines = [
        f"### eva tune study `{study.study_name}`",
        "",
        f"Held-out `val/acc` (%, final epoch, {info['val_split']:g} training images held out with `data.seed`), "
        f"per tuning seed and the mean (the objective); configs: {', '.join(f'`{c}`' for c in info['configs'])}"
        + (f"; fit arguments: `{' '.join(info['extra'])}`" if info["extra"] else "") + ".",
        "",
        "| trial | state | " + " | ".join(f"`{k}`" for k in keys) + " | "
        + " | ".join(f"seed {s}" for s in seeds) + " | mean | wall |",
        "| ---: | --- | " + " | ".join("---" for _ in keys) + " | " + " | ".join("---:" for _ in seeds) + " | ---: | ---: |",
    ]
    for r in rows(study):
        mean = pct(r.mean)
        mean = f"**{mean}** (chosen)" if best is not None and r.number == best.number else mean
        wall = f"{r.wall_s:.0f} s" if r.wall_s is not None else "–"
        lines.append(f"| {r.number} | {r.state} | " + " | ".join(_shown(r.values.get(k, "–")) for k in keys) + " | "
                     + " | ".join(pct(r.per_seed.get(s)) for s in seeds) + f" | {mean} | {wall} |")
    lines += ["", "Chosen: the highest mean of a complete trial (ties: the earliest trial); no trial read the test "
                  "split." if best else "No complete trial yet.",
              "", f"Command: `{info['command']}`", ""]
    return "\n".join(lines)


def figure(study, out: Path) -> Path:
    """Each trial's per-seed held-out accuracy (dots) and mean (bar), the chosen trial marked."""
    from eva_lightning.analysis.figures import plt

    table, best = rows(study), chosen(study)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(table) + 1.5), 4.2))
    for x, r in enumerate(table):
        ys = [100 * v for v in r.per_seed.values()]
        ax.scatter([x] * len(ys), ys, color="tab:blue", s=18, zorder=3)
        if r.mean is not None:
            chosen_one = best is not None and r.number == best.number
            ax.hlines(100 * r.mean, x - 0.3, x + 0.3, color="tab:red" if chosen_one else "black", lw=2.5 if chosen_one else 1.5)
    labels = [f"#{r.number}" + ("".join(f"\n{k.rsplit('.', 1)[-1]}={_shown(v)}" for k, v in r.values.items()))
              + ("" if r.state == "complete" else f"\n({r.state})") for r in table]
    ys = [100 * v for r in table for v in r.per_seed.values()]
    if ys:  # a margin of a few hundredths of a point (matplotlib's own is ±5 points around equal values)
        pad = max(0.05, 0.1 * (max(ys) - min(ys)))
        ax.set_ylim(min(ys) - pad, min(100.0, max(ys) + pad) if max(ys) < 100 else 100.0 + pad)
    ax.set_xticks(range(len(table)), labels, fontsize=7)
    ax.set_ylabel("held-out val/acc, final epoch (%)")
    ax.set_title(f"eva tune {study.study_name}\nheld-out accuracy per seed (dots), mean (bar; red: chosen)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- running trials
def make_objective(info: dict, runs: Path):
    """The objective: train the trial's settings once per tuning seed, return the mean final held-out val/acc."""

    def objective(trial) -> float:
        values = {key: suggest(trial, key, spec) for key, spec in info["space"].items()}
        name = f"trial_{trial.number}"
        if (runs / name).exists():
            raise EvaError(f"{runs / name} exists but is no trial of this study (was its database replaced?): move it "
                           "away, or choose another --study name")
        args = [*info["extra"], f"--data.val_split={info['val_split']:g}", *fit_args(values), "--test_after_fit=false"]
        per_seed: dict[str, dict] = {}
        for seed in info["seeds"]:
            run = train_seeds(info["configs"], [seed], args, runs, resume=False, name=name)[0]
            result = RunResult(run)
            record = result.held_out_record()
            per_seed[str(seed)] = {"val_acc": record.values[-1], "epochs": record.epochs,
                                   "wall_s": result.trained_seconds(), "run": str(run)}
            trial.set_user_attr("per_seed", per_seed)  # after each seed: --show sees a running trial's progress
        return statistics.mean(r["val_acc"] for r in per_seed.values())

    return objective


def requeue_cut_trials(study, points: list[dict] | None) -> int:
    """Queue again the settings of failed trials (a cut run, a crashed machine) that no complete, running or queued
    trial holds; with a grid, those are the points still missing. Returns how many were queued."""
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)  # a trial whose process died long ago (no heartbeat) is failed now
    failed = [t.params for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
              if t.params and (points is None or t.params in points)]
    queued: list[dict] = []
    for params in unclaimed(study, failed):
        if params not in queued:  # several failed trials of one setting: queued once
            study.enqueue_trial(params, skip_if_exists=False)
            queued.append(params)
    return len(queued)


def unclaimed(study, points: list[dict]) -> list[dict]:
    """The settings (grid points, failed trials') no complete, running or queued trial holds."""
    from optuna.trial import TrialState

    held = [t.params for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)]
    return [p for p in points if p not in held]


def make_sampler(name: str, space: dict, seed: int):
    import optuna

    if name == "grid":
        if grid_points(space) is None:
            raise EvaError("--sampler grid needs a list of choices for every key: the space has a range "
                           "({low, high}); use --sampler tpe or random")
        return optuna.samplers.GridSampler({k: _encoded(v) for k, v in space.items()}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def tune(args, extra: list[str]) -> None:
    """Create or continue the study, run ``--trials`` more trials, print the table."""
    import optuna

    study_name = args.study or (Path(args.space).stem if args.space else None)
    if study_name is None:
        raise EvaError("eva tune needs --config CONFIG --space SPACE.yaml (or --study NAME of an existing study)")
    url = args.storage or storage_url(args.root, study_name)
    # a SQLite file that is not there holds no study: it is created once the arguments have passed every check
    storage = None if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file() else (
        open_storage(url))
    existing = storage is not None and study_name in optuna.get_all_study_names(storage)
    old = optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(ATTR) if existing else None
    if existing and old is None:
        raise EvaError(f"study {study_name} in {url} was not made by eva tune: choose another --study name")

    # what this start gives; a study that exists takes the rest from how it was made (and refuses a change)
    given = {"configs": args.config or None, "space": read_space(args.space) if args.space else None,
             "seeds": args.seeds, "val_split": args.val_split, "extra": extra or None, "sampler": args.sampler}
    if old is not None:
        differs = [k for k, v in given.items() if v is not None and v != old[k]]
        if differs:
            raise EvaError(f"study {study_name} was made with other {', '.join(differs)} "
                           f"({'; '.join(f'{k}: {old[k]}' for k in differs)}): continue it as it was "
                           f"(eva tune --study {study_name} --trials N), or start another --study")
        given = {k: old[k] for k in given}
    configs, space, extra = given["configs"], given["space"], given["extra"] or []
    if not configs:
        raise EvaError("eva tune needs --config CONFIG (the config whose settings are chosen)")
    for config in configs:
        if not Path(config).is_file():
            raise EvaError(f"config {config} does not exist")
    if space is None:
        raise EvaError("eva tune needs --space SPACE.yaml: dotted config keys -> choices or {low, high} ranges")
    cfg = resolve_config(configs, extra)
    seeds = given["seeds"] or cfg.get("tuning_seeds")
    if not seeds:
        raise EvaError("no tuning seeds: name them in the config (tuning_seeds: [1, 2]) or give --seeds 1 2")
    if len(set(seeds)) != len(seeds):
        raise EvaError(f"--seeds repeats a seed: {seeds}")
    val_split = given["val_split"] if given["val_split"] is not None else cfg.get("data.val_split")
    if not val_split or val_split <= 0:
        raise EvaError("data.val_split is 0: validation would run on the test split, and a choice made on it is no "
                       "longer tested on unseen data; hold out part of the training set (--val_split 5000)")
    sampler = given["sampler"] or ("grid" if grid_points(space) is not None else "tpe")
    check_space(configs, space, extra, val_split)

    command = ["eva", "tune", *(a for c in configs for a in ("--config", c))]
    command += (["--space", args.space] if args.space else []) + ["--study", study_name, "--seeds", *map(str, seeds),
                "--val_split", f"{val_split:g}", "--sampler", sampler] + (["--", *extra] if extra else [])
    info = old or {"configs": list(configs), "space": space, "seeds": list(seeds), "val_split": float(val_split),
                   "extra": list(extra), "sampler": sampler, "objective": OBJECTIVE, "command": " ".join(command)}

    storage = storage or open_storage(url)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                sampler=make_sampler(sampler, space, args.sampler_seed), load_if_exists=True)
    if old is None:
        study.set_user_attr(ATTR, info)
    # a resumed random/TPE study draws on from where it stands, not the first draws again
    if sampler != "grid":
        study.sampler = make_sampler(sampler, space, args.sampler_seed + len(study.trials))
    points = grid_points(space) if sampler == "grid" else None
    if requeued := requeue_cut_trials(study, points):
        print(f"queued again the settings of {requeued} failed or cut trial(s)", flush=True)
    trials = args.trials
    if trials is None:
        if points is None:
            raise EvaError(f"--trials N is needed with --sampler {sampler} (a range has no end)")
        trials = len(unclaimed(study, points)) + len(study.get_trials(deepcopy=False, states=(
            optuna.trial.TrialState.WAITING,)))
    objective = make_objective(info, Path(args.root) / STUDY_DIR / study_name)
    for _ in range(trials):
        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if points is not None and not waiting and not unclaimed(study, points):
            print("every grid point is taken (complete or running elsewhere): nothing more to run", flush=True)
            break
        study.optimize(objective, n_trials=1)
    print(markdown(study))


# --------------------------------------------------------------------------- --apply
def extra_as_keys(extra: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` fit arguments as dotted config keys."""
    keys, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or arg == "--config":
            raise EvaError(f"the study's fit argument {arg!r} cannot be written as a config key: write the config by hand")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(extra):
            key, value = arg[2:], extra[i + 1]
            i += 2
        else:
            raise EvaError(f"the study's fit argument {arg} has no value")
        keys[key] = yaml.safe_load(value)
    return keys


def apply_choice(study, out: Path | None) -> tuple[Path, Row]:
    """Write a config that includes the study's configs and sets the chosen trial's values and ``tuning_seeds``
    (the study's seeds, with any the configs name already); returns it and the chosen trial."""
    import os

    info = study.user_attrs[ATTR]
    best = chosen(study)
    if best is None:
        raise EvaError(f"study {study.study_name} has no complete trial to apply")
    last = Path(info["configs"][-1])
    out = out or last.with_name(f"{last.stem}_{study.study_name}.yaml")
    if any(out.resolve() == Path(c).resolve() for c in info["configs"]):
        raise EvaError(f"--apply_to {out} is one of the study's configs: choose another file")
    cfg = resolve_config(info["configs"], info["extra"])
    seeds = sorted(set(info["seeds"]) | set(cfg.get("tuning_seeds") or []))
    includes = [Path(os.path.relpath(Path(c).resolve(), out.resolve().parent)).as_posix() for c in info["configs"]]
    body = {**extra_as_keys(info["extra"]), **best.values, "tuning_seeds": seeds}
    per_seed = ", ".join(f"seed {s} {pct(v)}" for s, v in best.per_seed.items())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# {' + '.join(info['configs'])} with the choice of `eva tune` study {study.study_name}: trial {best.number},\n"
        f"# held-out val/acc {pct(best.mean)}% ({per_seed}; data.val_split {info['val_split']:g}).\n"
        "# tuning_seeds: the seeds any choice saw. Report it on others: "
        f"eva seeds --config {out.as_posix()} --seeds 101 102 103 104 105\n"
        + yaml.safe_dump({"config": includes[0] if len(includes) == 1 else includes}, sort_keys=False)
        + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)
    )
    return out, best


# --------------------------------------------------------------------------- the command
def main(argv: list[str] | None = None) -> None:
    """Parse ``eva tune`` arguments; run trials, ``--show`` a study or ``--apply`` its choice."""
    from jsonargparse import ArgumentParser

    argv, extra = split_fit_args(argv)
    parser = ArgumentParser(
        prog="eva tune",
        description="Choose a config's settings on held-out validation (Optuna): every trial an eva fit per tuning "
                    "seed, scored by the mean final-epoch held-out val/acc; the test split is never read.",
        epilog="Arguments after -- go to every trial's eva fit, e.g. -- --trainer.max_epochs 2")
    parser.add_argument("--config", action="append", default=[], help="config file (repeat to compose, as eva fit)")
    parser.add_argument("--space", help="search space YAML: dotted keys -> [choices] or {low, high, log, step}")
    parser.add_argument("--study", help="study name (default: the space file's stem)")
    parser.add_argument("--trials", type=int, help="trials to add (default with a grid: the points still missing)")
    parser.add_argument("--seeds", type=int, nargs="+", help="tuning seeds (default: the config's tuning_seeds)")
    parser.add_argument("--val_split", type=float,
                        help="held-out part of the training set (default: the config's data.val_split; must be > 0)")
    parser.add_argument("--sampler", choices=SAMPLERS, help="default: grid when every key lists choices, else tpe")
    parser.add_argument("--sampler_seed", type=int, default=0, help="seed of the random and TPE samplers (default 0)")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///<root>/tune/<study>.db), e.g. "
                                          "postgresql://user:pass@host/db for several machines")
    parser.add_argument("--root", default=LOG_ROOT, help=f"log root (default {LOG_ROOT})")
    parser.add_argument("--show", metavar="STUDY", help="print the table of every trial and write a figure "
                                                        "(STUDY: a name or its .db file)")
    parser.add_argument("--out", help="with --show: also write the table as markdown to this file")
    parser.add_argument("--figure", help="with --show: the figure file (default <study>.png beside the .db)")
    parser.add_argument("--apply", metavar="STUDY", help="write the chosen settings as a config that includes the "
                                                         "study's configs, tuning_seeds filled in")
    parser.add_argument("--apply_to", help="with --apply: the file (default <config>_<study>.yaml beside the config)")
    args = parser.parse_args(argv)

    if args.show and args.apply:
        raise EvaError("--show and --apply are two commands: give one")
    if args.show or args.apply:
        name, url = locate(args.show or args.apply, args.storage, args.root)
        study = load_study(name, url)
        if args.apply:
            out, best = apply_choice(study, Path(args.apply_to) if args.apply_to else None)
            print(f"chosen: trial {best.number}, held-out val/acc {pct(best.mean)}% ({best.values})\nconfig: {out}\n"
                  f"report it on unseen seeds: eva seeds --config {out} --seeds 101 102 103 104 105")
            return
        text = markdown(study)
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text)
            print(f"table: {args.out}")
        default = (Path(url.removeprefix("sqlite:///")).with_suffix(".png") if url.startswith("sqlite:///")
                   else Path(args.root) / STUDY_DIR / f"{name}.png")
        print(f"figure: {figure(study, Path(args.figure) if args.figure else default)}")
        return
    if args.trials is not None and args.trials < 1:
        raise EvaError(f"--trials {args.trials}: give at least 1")
    tune(args, extra)
