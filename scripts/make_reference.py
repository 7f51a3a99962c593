"""Copy reference runs into ``lightning_logs/reference/<config>/`` for a fresh clone's TensorBoard.

    python scripts/make_reference.py lightning_logs/s4/version_0 lightning_logs/s5_step4/version_1
    python scripts/make_reference.py s11=lightning_logs/s11/version_3      # name it explicitly

Per run it keeps what a reader of the dashboards needs and nothing else, so the committed logs
stay small (at most ``--max_mb``, 20 MB by default, for the whole reference folder):

* every scalar point (one event file, original steps and wall times);
* the last image of each image tag (the final misclassified grid, GradCAM, ...);
* ``config.yaml``, ``run_info.yaml``, ``fit_result.json`` and the newest PNG of each figure family
  (``misclassified_epoch19.png`` but not epochs 0-18), with a ``report.md`` rebuilt over them.

Checkpoints and histograms are left out. ``tensorboard --logdir lightning_logs`` then shows the
reference runs next to the user's own.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: E402
from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: E402

from eva_lightning.runs import layout  # noqa: E402
from eva_lightning.core.errors import EvaError  # noqa: E402
from eva_lightning.runs.report import figure_families, write_report  # noqa: E402

log = logging.getLogger("make_reference")

KEEP_FILES = (layout.CONFIG, "hparams.yaml", layout.RUN_INFO, layout.FIT_RESULT)
SKIP_SCALARS = ("hp_metric",)  # TensorBoardLogger's placeholder (-1) for the HParams tab


def copy_events(run: Path, out: Path) -> tuple[int, int]:
    """All scalars and the final image of each image tag of ``run`` into one new event file."""
    # the raw protos are re-written as they are (PNG bytes, steps, wall times): no re-encoding
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    events: list[event_pb2.Event] = []
    for tag in tags["scalars"]:
        if tag in SKIP_SCALARS:
            continue
        for e in acc.Scalars(tag):
            value = summary_pb2.Summary.Value(tag=tag, simple_value=e.value)
            events.append(event_pb2.Event(wall_time=e.wall_time, step=e.step, summary=summary_pb2.Summary(value=[value])))
    for tag in tags["images"]:
        e = acc.Images(tag)[-1]
        image = summary_pb2.Summary.Image(
            height=e.height, width=e.width, colorspace=3, encoded_image_string=e.encoded_image_string
        )
        value = summary_pb2.Summary.Value(tag=tag, image=image)
        events.append(event_pb2.Event(wall_time=e.wall_time, step=e.step, summary=summary_pb2.Summary(value=[value])))
    events.sort(key=lambda ev: (ev.wall_time, ev.step))
    writer = EventFileWriter(str(out), filename_suffix=".reference")
    for ev in events:
        writer.add_event(ev)
    writer.close()
    return len(set(tags["scalars"]) - set(SKIP_SCALARS)), len(tags["images"])


def newest_figures(run: Path) -> list[Path]:
    """The newest PNG of each family: names equal once epoch/step numbers are removed."""
    return sorted(family[-1] for family in figure_families([p.relative_to(run) for p in run.rglob("*.png")]))


def make_reference(name: str, run_dir: Path, out_root: Path) -> Path:
    run = layout.resolve(run_dir)
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    n_scalars, n_images = copy_events(run, out)
    for fname in KEEP_FILES:
        if (run / fname).exists():
            shutil.copy2(run / fname, out / fname)
    legacy = run / "run_info.json"  # runs of 27 Nov 2026 before fit_result.json: same keys
    if not (out / layout.FIT_RESULT).exists() and legacy.exists():
        old = json.loads(legacy.read_text())
        keep = {k: old[k] for k in ("wall_time_s", "epochs", "global_step", "status") if k in old}
        (out / layout.FIT_RESULT).write_text(json.dumps(keep, indent=2))
    pngs = newest_figures(run)
    for rel in pngs:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / rel, out / rel)
    write_report(out, title=f"{name} (reference run {run.parent.name}/{run.name})")
    log.info("%s ← %s: %d scalar tags, %d image tags, %d figures", out, run, n_scalars, n_images, len(pngs))
    return out


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories, optionally as NAME=DIR (default NAME: the run's config)")
    parser.add_argument("--out", default=str(ROOT / "lightning_logs" / "reference"), help="reference folder")
    parser.add_argument("--max_mb", type=float, default=20.0, help="size limit of the whole reference folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    out_root = Path(args.out)
    start = time.perf_counter()
    try:
        for spec in args.runs:
            name, _, path = spec.rpartition("=")
            run = layout.resolve(path)
            make_reference(name or run.parent.name, run, out_root)
    except EvaError as exc:
        sys.exit(f"error: {exc}")
    size = folder_mb(out_root)
    log.info("%s: %.2f MB in total (limit %.0f MB), %.1f s", out_root, size, args.max_mb, time.perf_counter() - start)
    if size > args.max_mb:
        sys.exit(f"error: {out_root} is {size:.1f} MB, over the {args.max_mb:.0f} MB limit: pass fewer runs")


if __name__ == "__main__":
    main()
