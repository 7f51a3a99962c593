"""Final test accuracy (best only for a held-out validation split), epochs and training time per run.

    python benchmarks/summarize_runs.py lightning_logs      # a markdown table on stdout

The final epoch's test accuracy is the result: ``val/acc`` when validation ran on the test split
(``data.val_split: 0``; no best is taken over those epochs), ``test/acc`` of the final weights when
a held-out split exists, whose ``val/acc`` then also gets a best.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eva_lightning import runs  # noqa: E402  (the project's one event-file reader)


def summarize(run: Path) -> dict | None:
    scalars = runs.read_scalars(run)
    if "val/acc" not in scalars:
        return None
    val = scalars["val/acc"]  # (step, value, wall_time) per epoch
    steps = scalars.get("train/loss_step", [])
    split = runs.val_split(run)
    held_out = split > 0
    test = scalars.get("test/acc") if held_out else val
    best = runs.best_point(scalars, "val/acc") if held_out else None
    return {
        "run": runs.name(run),
        "epochs": len(val),
        "final_test": test[-1][1] if test else float("nan"),
        "val": f"held-out {split:g}: final {100 * val[-1][1]:.2f}%, best {100 * best[0]:.2f}% ({best[1]})"
        if best else "= test split",
        "train_span_s": (val[-1][2] - steps[0][2]) if steps else float("nan"),
    }


def main(root: str) -> None:
    rows = [r for d in sorted(Path(root).glob("*/version_*")) if (r := summarize(d))]
    print("| run | epochs | final test acc | validation | first step → last validation (s) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['run']} | {r['epochs']} | {100 * r['final_test']:.2f}% | {r['val']} | {r['train_span_s']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "lightning_logs")
