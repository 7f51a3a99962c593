"""The reference for every eva timing: an eva config's network, data, augmentation and schedule in a
hand-written PyTorch loop (no Lightning).

The network, data module and optimiser come from the config through ``EvaCLI(run=False)``, so
both sides train the same thing; only the loop differs. Per step it does what the LightningModule
does (forward, cross-entropy with the configured label smoothing, L1 if set, backward, step,
scheduler step, running loss/accuracy kept on the device); per epoch it evaluates on the
validation split. Nothing is read back to the host inside an epoch. The config's ``WhiteningInit``
and ``WarmupEMA`` callbacks (configs/cifar10_fast.yaml) are done by hand here, with the same
functions; with a held-out split the run ends, as ``eva fit``, by testing the final weights with
the model's test-time augmentation.

    python benchmarks/plain_loop.py --config configs/s11.yaml [--epochs 2] [-- --data.loader=torch]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from contextlib import nullcontext
from pathlib import Path
import sys

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eva_lightning.callbacks import WarmupEMA, WhiteningInit  # noqa: E402
from eva_lightning.callbacks.ema import cubic_ema_multi_avg_fn, warmup_ema_multi_avg_fn  # noqa: E402
from eva_lightning.callbacks.whitening import fit_whitening, training_images  # noqa: E402
from eva_lightning.cli import EvaCLI  # noqa: E402
from eva_lightning.core.layers import PatchWhitening  # noqa: E402
from eva_lightning.core.schedules import make_optimizer, make_scheduler, param_groups  # noqa: E402
from eva_lightning.core.tta import tta_logits  # noqa: E402


def build(config: str, overrides: list[str] | tuple[str, ...] = ()) -> EvaCLI:
    """The configured model, data module and trainer, not run (``seed_everything`` applied)."""
    return EvaCLI(args=["--config", config, *overrides], run=False)


def sync(device: torch.device) -> None:
    """Wait for the device: timings must include the queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def limit(value: int | float | None, n: int) -> int:
    """Batches per epoch under the trainer's ``limit_*_batches`` (an int: batches, a float: fraction)."""
    if value is None:
        return n
    return min(n, value) if isinstance(value, int) else int(n * value)


class Batches:
    """A data module's loader with its batches finished on ``device`` as ``on_after_batch_transfer`` does."""

    def __init__(self, split, loader, device: torch.device) -> None:
        self.split, self.loader, self.device = split, loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:  # index batches (loader: batched) are gathered and augmented on the device
            yield self.split.gather_batch(batch.to(self.device) if isinstance(batch, torch.Tensor) else batch)


def loaders(cli: EvaCLI, device: torch.device, channels_last: bool):
    """Train and validation batches: the data module's DataLoaders, as ``eva fit`` gets them."""
    dm = cli.datamodule
    dm.setup("fit")
    return Batches(dm.train_set, dm.train_dataloader(), device), Batches(dm.val_set, dm.val_dataloader(), device)


class StepClock:
    """Per epoch, the periods from one training step's start to the next's (the batch fetch and augmentation
    between them included): the one definition of a step's time for both loops (``benchmarks/run.py``)."""

    def __init__(self) -> None:
        self.epochs: list[list[float]] = []
        self._last: float | None = None

    def new_epoch(self) -> None:
        self.epochs.append([])
        self._last = None

    def tick(self) -> None:
        """A step starts."""
        now = time.perf_counter()
        if self._last is not None:
            self.epochs[-1].append(now - self._last)
        self._last = now


def configured_callback(callbacks: list, kind: type):
    """The one callback of ``kind`` in the configured trainer's list, or None."""
    return next((c for c in callbacks if isinstance(c, kind)), None)


def evaluate(forward, batches, n: int, device: torch.device, autocast, tta: str = "none") -> tuple[float, float]:
    """(accuracy, summed cross-entropy) over the first ``n`` batches, logits under test-time augmentation ``tta``."""
    correct, loss, seen = torch.zeros((), device=device, dtype=torch.long), torch.zeros((), device=device), 0
    with torch.no_grad(), autocast():
        for x, y in itertools.islice(batches, n):
            y = y.to(device, non_blocking=True)
            logits = tta_logits(forward, x.to(device, non_blocking=True), tta)
            loss += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
    return float(correct) / seen, float(loss) / seen


def plain_fit(cli: EvaCLI, epochs: int | None = None, lr: float | None = None, log=print) -> dict:
    """Train ``cli.model.net`` for ``epochs`` (default ``trainer.max_epochs``); per-epoch times and accuracy.

    Args:
        cli: from :func:`build`.
        epochs: epochs to run.
        lr: the optimiser's LR (default ``model.lr``, else the optimiser's own), e.g. the LR that
            eva's LR range test found, so that both sides train with the same schedule.
        log: where progress lines go.
    """
    model, trainer = cli.model, cli.trainer
    device = trainer.strategy.root_device
    epochs = epochs or trainer.max_epochs
    net = model.net.to(device)
    memory_format = torch.channels_last if model.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    fwd = torch.compile(net) if model.compile else net
    precision = str(trainer.precision)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    train_dl, val_dl = loaders(cli, device, model.channels_last)
    whitening, ema = (configured_callback(trainer.callbacks, kind) for kind in (WhiteningInit, WarmupEMA))
    if whitening is not None:  # eva: WhiteningInit.on_fit_start, before the first epoch (not timed there either)
        fit_whitening(net, training_images(cli.datamodule, whitening.images, torch.initial_seed()).to(device))

    lr = lr if lr is not None else model.lr
    opt = make_optimizer(model.optimizer_factory, param_groups(net, model.norm_lr_scale), lr)
    n_train, n_val = limit(trainer.limit_train_batches, len(train_dl)), limit(trainer.limit_val_batches, len(val_dl))
    average = None
    if ema is not None:  # eva: WarmupEMA (Lightning's WeightAveraging); the same update functions
        update = (cubic_ema_multi_avg_fn(ema.decay, ema.every_n_steps, lambda: n_train * epochs)
                  if ema.warmup == "cubic" else warmup_ema_multi_avg_fn(ema.decay))
        average = AveragedModel(net, use_buffers=True, multi_avg_fn=update)
    evaluated = net if average is None else average.module  # eva validates the average
    forward = fwd if average is None else average.module
    layout = lambda f: lambda x: f(x.contiguous(memory_format=memory_format))  # noqa: E731
    # the module's own schedule, built by the same function as in ImageClassifier.configure_optimizers
    sched = make_scheduler(opt, model.schedule, total_steps=n_train * epochs, epochs=epochs)
    interval = model.schedule.interval
    weights = [m.weight for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]

    clock = StepClock()
    result = {"train_s": [], "train_cpu_s": [], "step_s": clock.epochs, "eval_s": [], "val_acc": [], "train_loss": [],
              "images": 0}
    step = 0
    for epoch in range(epochs):
        net.train()
        if whitening is not None and whitening.bias_epochs is not None:
            for m in net.modules():
                if isinstance(m, PatchWhitening):
                    m.bias.requires_grad_(epoch < whitening.bias_epochs)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        sync(device)
        t0, cpu0 = time.perf_counter(), time.process_time()
        clock.new_epoch()
        for x, y in itertools.islice(train_dl, n_train):
            clock.tick()
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with autocast():
                logits = fwd(x)
                loss = F.cross_entropy(logits, y, label_smoothing=model.label_smoothing)
            if model.l1 > 0:
                loss = loss + model.l1 * sum(w.abs().sum() for w in weights)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            if interval == "step":
                sched.step()
            step += 1
            if average is not None and step % ema.every_n_steps == 0:
                average.update_parameters(net)
                if ema.lookahead:  # training restarts from the average
                    with torch.no_grad():
                        for a, c in zip((*average.module.parameters(), *average.module.buffers()),
                                        (*net.parameters(), *net.buffers())):
                            c.copy_(a)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        sync(device)
        t1, cpu1 = time.perf_counter(), time.process_time()
        evaluated.eval()
        acc, val_loss = evaluate(layout(forward), val_dl, n_val, device, autocast)
        sync(device)
        t2 = time.perf_counter()
        if interval == "epoch":
            sched.step()
        elif interval == "plateau":
            sched.step(val_loss)
        result["train_s"].append(t1 - t0)
        result["train_cpu_s"].append(cpu1 - cpu0)
        result["eval_s"].append(t2 - t1)
        result["val_acc"].append(acc)
        result["train_loss"].append(float(loss_sum) / seen)
        result["images"] += seen
        log(f"plain epoch {epoch}: train {t1 - t0:.2f}s ({seen / (t1 - t0):.0f} img/s), eval {t2 - t1:.2f}s, "
            f"train/loss {result['train_loss'][-1]:.4f}, val/acc {acc:.4f}")
    if average is not None:  # eva: WeightAveraging.on_train_end, the average becomes the model
        net.load_state_dict(average.module.state_dict())
    dm = cli.datamodule
    if cli.protocol.tests_after_fit:  # as eva fit: the final weights on the test split, with the model's TTA
        dm.setup("test")
        test = Batches(dm.test_set, dm.test_dataloader(), device)
        net.eval()
        t3 = time.perf_counter()
        result["test_acc"], _ = evaluate(layout(fwd), test,
                                         limit(trainer.limit_test_batches, len(test)), device, autocast, model.tta)
        sync(device)
        result["test_s"] = time.perf_counter() - t3
        log(f"plain test ({model.tta} TTA): {result['test_s']:.2f}s, test/acc {result['test_acc']:.4f}")
    result["lr"] = lr
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--json", default=None, help="write the result here")
    parser.add_argument("overrides", nargs="*", help="eva config overrides, after --")
    args = parser.parse_args(argv)
    result = plain_fit(build(args.config, args.overrides), args.epochs, args.lr)
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
