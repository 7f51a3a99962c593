"""Every CIFAR-10 config but S7 trains on the real JPEG copy for a bounded number of steps; its loss falls.

    EVA_DATA_DIR=/work/shared/data python benchmarks/cifar_bounded.py OUT
    EVA_DATA_DIR=/work/shared/data python benchmarks/cifar_bounded.py OUT --train-batches 4 --batch-size 16  # smoke

Each run is ``eva fit --config configs/<config>.yaml`` (S8, S9, S10, S11 with their ``data.loader: batched``,
and S9 again with ``--data.loader torch``, the DataLoader + albumentations path) for one epoch of
``--train-batches`` training and ``--val-batches`` validation batches, with the CPU's switches:
precision 32 (bf16 autocast is about 3x slower than fp32 on a CPU without AMX/avx512_bf16),
``benchmark`` off, and a smaller batch than the configs' 512 with a smaller LR to match (0.05 at
64). The one-cycle peak moves to the first fifth of the run, S10's and S11's LR range test is left
out (100 extra steps of a ResNet; the optimiser's LR is used instead) and so are the image
callbacks. Not an accuracy result: only that each config trains on real images. Per config it
prints the mean ``train/loss_step`` (logged every step) of the first and the last five steps and
PASS where the last is lower; the table goes to ``OUT/bounded.md``, the runs to ``OUT/lightning_logs``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: run name -> (config, extra overrides)
RUNS: dict[str, tuple[str, list[str]]] = {
    "s8": ("s8", []),
    "s9": ("s9", []),
    "s9_loader_torch": ("s9", ["--data.loader", "torch", "--data.num_workers", "2"]),
    "s10": ("s10", []),
    "s11": ("s11", []),
}


def loss_steps(run_dir: Path) -> list[float]:
    """``train/loss_step`` in step order, from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars("train/loss_step")] if "train/loss_step" in acc.Tags()["scalars"] else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder for the runs and bounded.md")
    parser.add_argument("--train-batches", type=int, default=40)
    parser.add_argument("--val-batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05, help="the optimiser's LR (the configs' 0.2 is for batch 512)")
    parser.add_argument("--window", type=int, default=5, help="steps averaged at each end")
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    rows, ok = [], True
    for name in args.runs:
        config, extra = RUNS[name]
        cpu = [
            "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.benchmark", "false",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", str(args.train_batches),
            "--trainer.limit_val_batches", str(args.val_batches), "--trainer.limit_test_batches", str(args.val_batches),
            "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false", "--trainer.callbacks", "[]",
            "--data.batch_size", str(args.batch_size), "--model.init_args.optimizer.init_args.lr", str(args.lr),
        ]
        if config != "s10":  # one-cycle: the peak inside the one short epoch (S10's schedule is the plateau)
            cpu += ["--model.init_args.schedule.peak_epoch", "0.2"]
        cmd = [sys.executable, "-m", "eva_lightning", "fit", "--config", str(ROOT / "configs" / f"{config}.yaml"),
               *cpu, *extra, "--trainer.logger.init_args.name", name]
        start = time.perf_counter()
        with open(out / f"{name}.log", "w") as log:
            rc = subprocess.run(cmd, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - start
        runs = sorted((out / "lightning_logs" / name).glob("version_*"), key=lambda p: p.stat().st_mtime)
        losses = loss_steps(runs[-1]) if runs else []
        w = min(args.window, len(losses) // 2)
        first = sum(losses[:w]) / w if w else float("nan")
        last = sum(losses[-w:]) / w if w else float("nan")
        passed = rc == 0 and w > 0 and last < first
        ok &= passed
        rows.append(f"| {name} | {config} | {' '.join(extra) or '(as configured)'} | {len(losses)} | "
                    f"{first:.3f} | {last:.3f} | {wall:.0f} s | {rc} | {'PASS' if passed else 'FAIL'} |")
        print(rows[-1], flush=True)
    table = "\n".join([
        f"train/loss_step, mean of the first vs the last {args.window} steps; {args.train_batches} training batches "
        f"of {args.batch_size}, {args.val_batches} validation batches, precision 32, CPU",
        "",
        "| run | config | overrides | steps | loss first | loss last | wall | exit | |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    (out / "bounded.md").write_text(table + "\n")
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
