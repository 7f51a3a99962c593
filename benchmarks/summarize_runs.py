"""Best and final val/acc (= test split unless val_split > 0), epochs and training time per run.

    python benchmarks/summarize_runs.py lightning_logs      # a markdown table on stdout
"""

from __future__ import annotations

import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def summarize(run: Path) -> dict | None:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    if "val/acc" not in acc.Tags()["scalars"]:
        return None
    val = acc.Scalars("val/acc")
    walls = [e.wall_time for e in acc.Scalars("train/loss_step")] if "train/loss_step" in acc.Tags()["scalars"] else []
    best = max(val, key=lambda e: e.value)
    return {
        "run": f"{run.parent.name}/{run.name}",
        "epochs": len(val),
        "best": best.value,
        "best_epoch": val.index(best),
        "final": val[-1].value,
        "train_span_s": (val[-1].wall_time - walls[0]) if walls else float("nan"),
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
