"""Final test accuracy (best only for a held-out validation split), epochs and training time per run.

    python benchmarks/summarize_runs.py lightning_logs      # a markdown table on stdout

The test accuracy is each run's result of record (``RunResult.result_of_record``: the final epoch's,
from ``test/acc`` when a validation split was held out, whose ``val/acc`` then also gets a best); a run
without one (unfinished, or held out without a test) shows "–".
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eva_lightning.core.errors import EvaError  # noqa: E402
from eva_lightning.runs.layout import holds_run, name  # noqa: E402
from eva_lightning.runs.result import RunResult  # noqa: E402


def summarize(run: Path) -> dict | None:
    result = RunResult(run)
    if "val/acc" not in result.scalars:
        return None
    val = result.scalars["val/acc"]  # (step, value, wall_time) per epoch
    steps = result.scalars.get("train/loss_step", [])
    best = result.best("val/acc")
    try:
        final_test = f"{100 * result.result_of_record().values[-1]:.2f}%"
    except EvaError:
        final_test = "–"
    return {
        "run": name(result.path),
        "epochs": len(val),
        "final_test": final_test,
        "val": f"held-out {result.val_split:g}: final {100 * val[-1][1]:.2f}%, best {100 * best[0]:.2f}% ({best[1]})"
        if best else "= test split",
        "train_span_s": (val[-1][2] - steps[0][2]) if steps else float("nan"),
    }


def main(root: str) -> None:
    rows = [r for d in sorted(Path(root).glob("*/version_*")) if holds_run(d) and (r := summarize(d))]
    print("| run | epochs | final test acc | validation | first step → last validation (s) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['run']} | {r['epochs']} | {r['final_test']} | {r['val']} | {r['train_span_s']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "lightning_logs")
