"""ImageClassifier: the LightningModule every assignment subclasses.

A subclass only builds ``self.net`` (a plain ``nn.Module``); loss, metrics, L1/L2,
optimiser and LR schedule are wired here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torch.optim import lr_scheduler

from eva_lightning.errors import EvaError


@dataclass(frozen=True)
class Schedule:
    """The LR schedule.

    Args:
        name: ``none`` | ``step`` | ``cosine`` | ``plateau`` | ``onecycle``.
        step_size: ``step``: epochs between drops.
        gamma: ``step``: factor per drop.
        factor: ``plateau``: factor per drop.
        patience: ``plateau``: flat epochs of ``val/loss`` before a drop.
        min_lr: ``cosine``/``plateau``: lower bound.
        peak_epoch: ``onecycle``: the LR reaches the optimiser's LR (the max) at the first step
            of this epoch (counted from 0).
        anneal: ``onecycle``: ``linear`` or ``cos`` ramps.
        div_factor: ``onecycle``: starting LR = max / div_factor.
        final_div_factor: ``onecycle``: last LR = starting LR / final_div_factor (1: no annihilation).
    """

    name: Literal["none", "step", "cosine", "plateau", "onecycle"] = "none"
    step_size: int = 10
    gamma: float = 0.1
    factor: float = 0.1
    patience: int = 3
    min_lr: float = 0.0
    peak_epoch: float = 5
    anneal: Literal["linear", "cos"] = "linear"
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        # every field, whatever the name: a nonsense value is a mistake even where this schedule ignores it
        problems = {
            "step_size": (self.step_size >= 1, "at least 1 (epochs between LR drops)"),
            "gamma": (self.gamma > 0, "> 0 (the factor per drop; 0.1 divides the LR by 10)"),
            "factor": (0 < self.factor < 1, "in (0, 1) (the factor per drop; 0.1 divides the LR by 10)"),
            "patience": (self.patience >= 0, ">= 0 (flat epochs before a drop)"),
            "min_lr": (self.min_lr >= 0, ">= 0 (the lowest LR)"),
            "peak_epoch": (self.peak_epoch > 0, "> 0 (the epoch, counted from 0, whose first step has the peak LR)"),
            "div_factor": (self.div_factor >= 1, ">= 1 (starting LR = peak LR / div_factor)"),
            "final_div_factor": (self.final_div_factor > 0, "> 0 (last LR = starting LR / final_div_factor)"),
        }
        for name, (ok, rule) in problems.items():
            if not ok:
                raise EvaError(
                    f"model.init_args.schedule.{name}={getattr(self, name)} is impossible: it must be {rule}"
                )


# checkpoints keep the Schedule in their hyper-parameters; torch.load(weights_only=True) must accept it
torch.serialization.add_safe_globals([Schedule])


class ImageClassifier(L.LightningModule):
    """Base module: cross-entropy, micro accuracy, optional L1, scheduler by config.

    Args:
        num_classes: output classes (linked from ``data.num_classes``).
        in_channels: input channels (linked from ``data.in_channels``).
        optimizer: the optimiser class and its arguments (L2 is its ``weight_decay``).
        lr: if set, replaces the optimiser's LR; ``eva lr_find`` / the LR-finder callback write it.
        schedule: the LR schedule.
        l1: λ of the L1 penalty λ·Σ|w| over conv and linear weights (not biases or norm layers).
        label_smoothing: cross-entropy label smoothing.
        channels_last: NHWC memory layout (faster convs on GPUs with tensor cores).
        compile: run the network through ``torch.compile``.
    """

    #: module path of the layer GradCAM looks at; each assignment names its own.
    gradcam_layer: str | None = None

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        optimizer: OptimizerCallable = torch.optim.SGD,
        lr: float | None = None,
        schedule: Schedule = Schedule(),
        l1: float = 0.0,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        # `not x >= 0` rather than `x < 0`: NaN fails too
        if not (num_classes >= 1 and in_channels >= 1):
            raise EvaError(f"num_classes={num_classes}, in_channels={in_channels}: both must be at least 1 (set by the data)")
        if not l1 >= 0:
            raise EvaError(f"model.init_args.l1={l1} is impossible: the L1 λ must be >= 0 (0 turns the penalty off)")
        if not 0 <= label_smoothing < 1:
            raise EvaError(
                f"model.init_args.label_smoothing={label_smoothing} is impossible: it must be in [0, 1) (0.1 is usual)"
            )
        if lr is not None and not lr > 0:
            raise EvaError(
                f"model.init_args.lr={lr} is impossible: the learning rate must be > 0 (or unset: the optimiser's lr)"
            )
        # the optimiser is built in configure_optimizers, after the run directory exists: try its arguments now
        try:
            groups = optimizer([nn.Parameter(torch.zeros(1))]).param_groups
        except ValueError as exc:  # torch's own checks: "Invalid learning rate: -0.1"
            raise EvaError(f"model.init_args.optimizer.init_args: {exc}; fix that value") from None
        if not 0 <= groups[0].get("momentum", 0) < 1:  # torch checks >= 0 only; >= 1 never forgets a step
            raise EvaError(
                f"model.init_args.optimizer.init_args.momentum={groups[0]['momentum']} is impossible: "
                "it must be in [0, 1) (0.9 is usual)"
            )
        self.save_hyperparameters(ignore=["optimizer"])
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.optimizer_factory = optimizer
        self.lr = lr
        self.schedule = schedule
        self.l1 = l1
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        self.compile = compile
        # validate_args=False: the check counts torch.unique(target) on the host, a device sync every step
        metric = lambda: torchmetrics.Accuracy(  # noqa: E731
            task="multiclass", num_classes=num_classes, average="micro", validate_args=False
        )
        self.train_acc, self.val_acc, self.test_acc = metric(), metric(), metric()
        self._sums: dict[str, torch.Tensor] = {}  # stage -> device-side sums of the epoch so far
        self._seen: dict[str, int] = {}
        self.net: nn.Module  # set by the subclass

    # ------------------------------------------------------------------ forward
    def setup(self, stage: str) -> None:
        # here rather than in configure_model: overriding that hook makes Lightning's WeightAveraging
        # warn about sharding; setup also runs before the optimiser is built, on every entry (idempotent)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile and "_compiled" not in self.__dict__:
            # kept out of the module tree so checkpoints hold the plain network's keys
            self.__dict__["_compiled"] = torch.compile(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the one place the input layout is set: batched augmentation hands over NHWC memory,
        # albumentations NCHW; either becomes what the network's weights are in
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return self.__dict__.get("_compiled", self.net)(x)

    def l1_penalty(self) -> torch.Tensor:
        """λ·Σ|w| over the weights of conv and linear layers."""
        weights = [m.weight for m in self.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        return self.l1 * sum(w.abs().sum() for w in weights)

    # Per step only device-side sums: each self.log costs about a millisecond of Python in Lightning
    # (its result collection moves every value to the device), more than a small net's step on a
    # GPU. Epoch means go out once per epoch under the plain names (train/loss, val/acc ...).
    def _accumulate(self, stage: str, values: torch.Tensor, n: int) -> None:
        sums = values.detach() * n
        self._sums[stage] = sums if stage not in self._sums else self._sums[stage] + sums
        self._seen[stage] = self._seen.get(stage, 0) + n

    def _epoch_means(self, stage: str) -> torch.Tensor | None:
        sums, seen = self._sums.pop(stage, None), self._seen.pop(stage, 0)
        return None if sums is None else sums / seen

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        # train/* are logged with the epoch's last batch (not in on_train_epoch_end), so callbacks
        # see them at epoch end; the per-step loss goes to its own tag on steps the logger writes.
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.train_acc.update(logits.detach(), y)
        penalty = self.l1_penalty() if self.l1 > 0 else None
        self._accumulate("train", loss[None] if penalty is None else torch.stack([loss, penalty]), y.shape[0])
        if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train/loss_step", loss, on_step=True, on_epoch=False)
        if batch_idx + 1 >= self.trainer.num_training_batches:
            means = self._epoch_means("train")
            self.log("train/loss", means[0], on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
            self.log("train/acc", self.train_acc.compute(), on_step=False, on_epoch=True, prog_bar=True)
            if self.l1 > 0:
                self.log("train/l1", means[1], on_step=False, on_epoch=True, sync_dist=True)
            self.train_acc.reset()
        return loss if penalty is None else loss + penalty

    def on_train_epoch_start(self) -> None:
        self._epoch_means("train")  # drop an interrupted epoch's leftovers

    def _eval_step(self, batch, stage: str, metric: torchmetrics.Metric) -> None:
        x, y = batch
        logits = self(x)
        metric.update(logits, y)
        self._accumulate(stage, F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)[None], y.shape[0])

    def _eval_epoch_end(self, stage: str, metric: torchmetrics.Metric) -> None:
        means = self._epoch_means(stage)
        if means is not None:
            self.log(f"{stage}/loss", means[0], prog_bar=True, sync_dist=True)
            self.log(f"{stage}/acc", metric.compute(), prog_bar=True)
        metric.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=1)

    # ------------------------------------------------------------------ optimiser and schedule
    def configure_optimizers(self):
        opt = self.optimizer_factory(self.parameters())
        if self.lr is not None:
            for group in opt.param_groups:
                group["lr"] = self.lr
        s = self.schedule
        interval = "epoch"
        if s.name == "none":
            # a constant schedule, so the LR monitor logs it under the same name `lr` as the others
            sched = lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
        elif s.name == "step":
            sched = lr_scheduler.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
        elif s.name == "cosine":
            sched = lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.estimated_stepping_batches, eta_min=s.min_lr)
            interval = "step"
        elif s.name == "plateau":
            sched = lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "name": "lr"}}
        else:
            sched, interval = self._one_cycle(opt), "step"
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval, "name": "lr"}}

    def _one_cycle(self, opt: torch.optim.Optimizer) -> lr_scheduler.LRScheduler:
        """One-cycle stepped every batch, peaking exactly at the first step of ``peak_epoch``."""
        s = self.schedule
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(1, self.trainer.max_epochs or 1)
        peak_step = round(s.peak_epoch * total / epochs)
        if self.trainer.fast_dev_run or total < 3:  # too few steps for a cycle: hold the LR
            return lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
        if not 0 < peak_step < total - 1:
            raise EvaError(
                f"schedule.peak_epoch={s.peak_epoch} is outside the run ({epochs} epochs, {total} steps): "
                "choose a peak epoch between 0 and trainer.max_epochs"
            )
        # OneCycleLR's warm-up ends at step pct_start*total - 1, so +1 puts the max on peak_step
        return lr_scheduler.OneCycleLR(
            opt,
            max_lr=[g["lr"] for g in opt.param_groups],
            total_steps=total,
            pct_start=(peak_step + 1) / total,
            anneal_strategy=s.anneal,
            div_factor=s.div_factor,
            final_div_factor=s.final_div_factor,
            cycle_momentum=False,
        )
