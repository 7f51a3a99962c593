"""``eva fit`` against the plain loop, alternately in one process: per-epoch time, images/s, ratio.

Each repeat runs the config through ``eva fit`` (``EvaCLI`` → ``trainer.fit``, exactly what the
command does, with a timing callback added and the progress bar off) and through
``benchmarks/plain_loop.py`` with the LR eva ended up using (the LR range test's pick, where the
config has one). Both build the net and data from the same config and seed. On a shared machine
only the ratio of neighbouring runs means much, hence the alternation, in the order eva, plain,
plain, eva, ...: a machine (or process) whose speed drifts over the run slows both sides alike
(with eva first in every pair, a process that sped up over the run read as eva being slower).

Times: ``train_s`` is an epoch's training batches (to the start of validation); ``train_cpu_s`` the
CPU time this process spent in them (all its threads: on a shared machine it leaves out the time
the process waited for a core, so it is the steadier figure at one thread); ``step_s`` the periods
from one training step's start to the next (the data fetch and batch augmentation between them
included; on CUDA the host's, which over an epoch keep the device's pace), whose median over the
steady epochs shrugs off a burst of other work on the machine; ``epoch_s`` the
whole epoch (eva's: validation, checkpointing and epoch-end logging too; plain: validation). The first epoch is reported but
left out of the steady-state figures (warm-up: cuDNN autotuning, allocator, compile).

    python benchmarks/run.py --config configs/s5.yaml --epochs 1 --repeats 2 --out results/s5.json
    python benchmarks/run.py --config configs/s11.yaml --out results/s11.json \
        -- --data.loader=torch

``--config`` repeats as in ``eva fit``: the files are merged in order (S6 and S7-S11 are compositions).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plain_loop import StepClock, build, plain_fit, sync  # noqa: E402

from eva_lightning.entry import keep_freed_memory  # noqa: E402

log = logging.getLogger("benchmarks.run")


class EpochTimer(Callback):
    """Per epoch: the training batches (start of epoch to start of validation) and the whole epoch.

    The rest of an epoch (validation, checkpointing, epoch-end logging) is ``epoch_s - train_s``.
    The device is synchronised at each edge.
    """

    def __init__(self) -> None:
        self.train_s: list[float] = []
        self.train_cpu_s: list[float] = []
        self.epoch_s: list[float] = []
        self.steps = StepClock()
        self.images = 0

    def _now(self, pl_module) -> float:
        sync(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0, self._train, self._cpu0 = self._now(pl_module), None, time.process_time()
        self.steps.new_epoch()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.tick()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[1])

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and getattr(self, "_t0", None) is not None and self._train is None:
            self._train = self._now(pl_module) - self._t0
            self.train_cpu_s.append(time.process_time() - self._cpu0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = self._now(pl_module) - self._t0
        self.epoch_s.append(epoch)
        self.train_s.append(epoch if self._train is None else self._train)


class SyncCheck(Callback):
    """CUDA only: where the training batches of one epoch synchronise with the host.

    ``torch.cuda.set_sync_debug_mode("warn")`` makes every synchronising operation (``.item()``,
    ``nonzero``, a copy to the host ...) warn; each warning is recorded by its nearest frames
    outside torch. Lightning's logging every ``log_every_n_steps`` shows up here by design.
    """

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch
        self.events: collections.Counter = collections.Counter()
        self._cm = None

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        frames = [f for f in traceback.extract_stack()[:-2] if "/torch/" not in f.filename and "warnings" not in f.filename]
        where = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-3:]))
        if "_now" not in where:  # the timer's own synchronisation at the epoch edges
            self.events[where] += 1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if pl_module.device.type == "cuda" and trainer.current_epoch == self.epoch and self._cm is None:
            self._cm = warnings.catch_warnings()
            self._cm.__enter__()
            warnings.simplefilter("always")
            warnings.showwarning = self._record
            torch.cuda.set_sync_debug_mode("warn")

    def _stop(self) -> None:
        if self._cm is not None:
            torch.cuda.set_sync_debug_mode(0)
            self._cm.__exit__(None, None, None)
            self._cm = None
            self.epoch = -1

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._stop()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop()


def eva_fit(config: str, overrides: list[str]) -> dict:
    """``eva fit --config CONFIG OVERRIDES`` with an :class:`EpochTimer`; times, accuracy, the LR used."""
    cli = build(config, [*overrides, "--trainer.enable_progress_bar=false"])
    timer, syncs = EpochTimer(), SyncCheck(epoch=1)
    # every callback costs each step (~6 µs per hook, 6 hooks, on the 2-core VM): the sync check only where it reads
    cli.trainer.callbacks.extend([timer, syncs] if cli.trainer.strategy.root_device.type == "cuda" else [timer])
    t0 = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - t0
    train_s = timer.train_s
    acc = cli.trainer.callback_metrics.get("val/acc")
    return {
        "train_s": train_s,
        "train_cpu_s": timer.train_cpu_s,
        "step_s": timer.steps.epochs,
        "eval_s": [e - t for e, t in zip(timer.epoch_s, train_s)],  # validation + checkpoint + epoch end
        "epoch_s": timer.epoch_s,
        "fit_wall_s": wall,
        "images": timer.images,
        "val_acc": float(acc) if acc is not None else None,
        "lr": cli.model.lr,  # set by an LR range test in the config; None: the optimiser's own
        "train_loader": type(cli.trainer.train_dataloader).__name__,
        "device": str(cli.trainer.strategy.root_device),
        "precision": str(cli.trainer.precision),
        "epochs": len(train_s),
        "syncs_epoch_1": dict(syncs.events),  # CUDA only: {where: count} in epoch 1's training batches
        "steps_per_epoch": cli.trainer.num_training_batches,
    }


def after_warmup(per_epoch: list) -> list:
    """The epochs after the first (warm-up) one, where there are more."""
    return per_epoch[1:] if len(per_epoch) > 1 else per_epoch


def steady(times: list[float]) -> float:
    """Median epoch time without the first (warm-up) epoch where there are more."""
    return statistics.median(after_warmup(times))


def summary(runs: list[dict], images_per_epoch: float) -> dict:
    train = [t for r in runs for t in after_warmup(r["train_s"])]
    steps = [t for r in runs for epoch in after_warmup(r["step_s"]) for t in epoch]
    med = statistics.median(train)
    return {
        "train_epoch_s_median": med,
        "step_s_median": statistics.median(steps) if steps else None,
        "train_images_per_s": images_per_epoch / med,
        "train_total_s": [sum(r["train_s"]) for r in runs],
        "epoch_total_s": [sum(r["train_s"]) + sum(r["eval_s"]) for r in runs],
        "val_acc": [r["val_acc"] if not isinstance(r["val_acc"], list) else r["val_acc"][-1] for r in runs],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, action="append", help="an eva config; repeat to compose, in order")
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.max_epochs")
    parser.add_argument("--repeats", type=int, default=1, help="eva/plain pairs, alternating")
    parser.add_argument("--out", default=None, help="JSON result file")
    parser.add_argument("--skip-plain", action="store_true", help="time eva fit only")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--workdir", default=None, help="run here (lightning_logs/, checkpoints)")
    parser.add_argument("overrides", nargs="*", help="eva config overrides, after --")
    args = parser.parse_args(argv)
    # as the eva command does (both runs share this process: the plain loop gets it too; EVA_MALLOC=system: neither)
    keep_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    config, *more = (str(Path(c).resolve()) for c in args.config)
    out = Path(args.out).resolve() if args.out else None
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        os.chdir(args.workdir)
    overrides = list(args.overrides) + ([f"--trainer.max_epochs={args.epochs}"] if args.epochs else [])
    composed = [arg for c in more for arg in ("--config", c)]  # the later files, merged after the first


    eva_runs, plain_runs = [], []
    for rep in range(args.repeats):
        # eva, plain, plain, eva, ...: a drift in the machine's speed falls on both sides alike (eva runs first
        # of all: the plain loop takes the LR eva ended up with)
        for side in ("eva", "plain") if rep % 2 == 0 else ("plain", "eva"):
            if side == "eva":
                r = eva_fit(config, composed + overrides)
                eva_runs.append(r)
                log.info("eva   #%d: train %s s, val/acc %.4f, %s on %s", rep, [round(t, 2) for t in r["train_s"]],
                         r["val_acc"] or float("nan"), r["train_loader"], r["device"])
            elif not args.skip_plain:
                p = plain_fit(build(config, composed + overrides), eva_runs[0]["epochs"], lr=eva_runs[0]["lr"],
                              log=log.info)
                plain_runs.append(p)
                log.info("plain #%d: train %s s, val/acc %.4f", rep, [round(t, 2) for t in p["train_s"]],
                         p["val_acc"][-1])

    per_epoch = eva_runs[0]["images"] / max(1, eva_runs[0]["epochs"])
    result = {
        "config": " ".join(args.config),
        "overrides": overrides,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "host": platform.node(),
            "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        },
        "eva": summary(eva_runs, per_epoch),
        "eva_runs": eva_runs,
    }
    if plain_runs:
        result["plain"] = summary(plain_runs, per_epoch)
        result["plain_runs"] = plain_runs
        result["ratio_eva_over_plain"] = {
            "train_epoch_median": result["eva"]["train_epoch_s_median"] / result["plain"]["train_epoch_s_median"],
            "step_median": (result["eva"]["step_s_median"] / result["plain"]["step_s_median"]
                            if result["eva"]["step_s_median"] and result["plain"]["step_s_median"] else None),
            "train_total": [e / p for e, p in zip(result["eva"]["train_total_s"], result["plain"]["train_total_s"])],
            "epoch_total": [e / p for e, p in zip(result["eva"]["epoch_total_s"], result["plain"]["epoch_total_s"])],
        }
    text = json.dumps(result, indent=1)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
