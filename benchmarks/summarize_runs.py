"""Best and final val/acc (= test split unless val_split > 0), epochs and training time per run.

    python benchmarks/summarize_runs.py lightning_logs      # a markdown table on stdout
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eva_lightning.report import read_scalars  # noqa: E402  (the project's one event-file reader)


def summarize(run: Path) -> dict | None:
    scalars = read_scalars(run)
    if "val/acc" not in scalars:
        return None
    val = scalars["val/acc"]  # (step, value, wall_time) per epoch
    steps = scalars.get("train/loss_step", [])
    best = max(range(len(val)), key=lambda i: val[i][1])
    return {
        "run": f"{run.parent.name}/{run.name}",
        "epochs": len(val),
        "best": val[best][1],
        "best_epoch": best,
        "final": val[-1][1],
        "train_span_s": (val[-1][2] - steps[0][2]) if steps else float("nan"),
    }


def main(root: str) -> None:
    rows = [r for d in sorted(Path(root).glob("*/version_*")) if (r := summarize(d))]
    print("| run | epochs | best val/acc (epoch) | final val/acc | first step → last validation (s) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['run']} | {r['epochs']} | {100 * r['best']:.2f}% ({r['best_epoch']}) | "
              f"{100 * r['final']:.2f}% | {r['train_span_s']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "lightning_logs")
