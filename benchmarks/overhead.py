"""Lightning's per-step overhead alone: a tiny network and batch through ``eva fit`` against the plain loop.

The network (:class:`Tiny`: one strided 3x3 conv, ReLU, global average pool, a 1x1 classifier; 170
parameters) costs a fraction of a millisecond a step, so nearly all of a step's time is Python:
the loop, hooks, callbacks, logging and metric updates on eva's side; forward, backward and step
on the plain loop's. Both sides train the same net on the same batches with the same optimiser
and schedule (``benchmarks/run.py`` alternates them in one process); the figure is eva's extra
milliseconds per training step, steady state (the first epoch left out).

    python benchmarks/overhead.py [--threads 1] [--repeats 2] [--out benchmarks/results/overhead.json] [-- eva overrides]

Needs MNIST under ``$EVA_DATA_DIR`` (any data the config can read would do: the net is what is tiny).
The ``eva fit`` side runs with every default callback of the command (``last.ckpt``, LR monitor,
RNG state, NaN guard, run info, report) and ``--trainer.enable_progress_bar false``.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run  # noqa: E402
from eva_lightning.core.module import ImageClassifier  # noqa: E402

CONFIG = Path(__file__).resolve().parent / "overhead.yaml"


class Tiny(ImageClassifier):
    """conv 3x3 stride 2 (8 channels) - ReLU - GAP - 1x1 conv to the classes."""

    def __init__(self, width: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = nn.Sequential(
            nn.Conv2d(self.in_channels, width, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(width, self.num_classes, 1), nn.Flatten(),
        )


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    options = argv[: argv.index("--")] if "--" in argv else argv
    result = run.main(["--config", str(CONFIG), "--epochs", "3", *options, "--", *extra])
    steps = result["eva_runs"][0]["steps_per_epoch"]
    ms = {side: 1000 * result[side]["train_epoch_s_median"] / steps for side in ("eva", "plain")}
    # per repeat: eva's steady epochs minus the plain loop's right after it (neighbours share the machine's
    # mood), by the clock and by the process's CPU time (steadier on a shared machine, at one thread)
    def paired(key: str) -> list[float]:
        return [1000 * (run.steady(e[key]) - run.steady(p[key])) / steps
                for e, p in zip(result["eva_runs"], result["plain_runs"])]

    wall, cpu = paired("train_s"), paired("train_cpu_s")
    summary = {"steps_per_epoch": steps, "eva_ms_per_step": ms["eva"], "plain_ms_per_step": ms["plain"],
               "overhead_ms_per_step": statistics.median(wall), "overhead_cpu_ms_per_step": statistics.median(cpu),
               "each_repeat_wall": wall, "each_repeat_cpu": cpu}
    print(json.dumps(summary, indent=1))
    result["overhead"] = summary
    if "--out" in options:  # run.main wrote its result there: add the summary
        Path(options[options.index("--out") + 1]).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
