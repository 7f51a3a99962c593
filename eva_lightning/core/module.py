"""ImageClassifier: the LightningModule every assignment subclasses; a subclass only builds ``self.net``."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from eva_lightning.core.schedules import Schedule, check_span, make_optimizer, make_scheduler, param_groups
from eva_lightning.core.tta import TTA, tta_logits
from eva_lightning.core.errors import EvaError


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
        tta: test-time augmentation of ``eva test``, ``eva validate``, ``eva predict`` and the test ending a fit:
            ``none``, ``flip`` or ``flip_translate`` (airbench94's; :func:`~eva_lightning.core.tta.tta_logits`);
            the validation epochs during fit stay one view (they run every epoch).
        norm_lr_scale: LR factor for the norm layers' parameters, whose weight decay is divided by it (the same
            decay per step as the rest): airbench94's 64 for BatchNorm biases; 1: one group.
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
        tta: TTA = "none",
        norm_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        # `not x >= 0` rather than `x < 0`: NaN fails too
        if not (num_classes >= 1 and in_channels >= 1):
            raise EvaError(f"num_classes={num_classes}, in_channels={in_channels}: both must be at least 1 (set by the data)")
        if not l1 >= 0:
            raise EvaError(f"model.init_args.l1={l1} is impossible: the L1 λ must be >= 0 (0 turns the penalty off)")
        if not 0 <= label_smoothing < 1:
            raise EvaError(f"model.init_args.label_smoothing={label_smoothing} is impossible: it must be in [0, 1) (0.1 is usual)")
        if not norm_lr_scale > 0:
            raise EvaError(f"model.init_args.norm_lr_scale={norm_lr_scale} is impossible: the LR factor must be > 0 (1: none)")
        if lr is not None and not lr > 0:
            raise EvaError(f"model.init_args.lr={lr} is impossible: the learning rate must be > 0 (or unset: the optimiser's lr)")
        if not callable(optimizer):  # `optimizer: null` in a config
            raise EvaError(f"model.init_args.optimizer={optimizer!r} is no optimiser: give one, e.g. "
                           "{class_path: torch.optim.SGD, init_args: {lr: 0.05, momentum: 0.9}}")
        # the optimiser is built in configure_optimizers, after the run directory exists: try its arguments now
        try:
            groups = optimizer([nn.Parameter(torch.zeros(1))]).param_groups
        except ValueError as exc:  # torch's own checks: "Invalid learning rate: -0.1"
            raise EvaError(f"model.init_args.optimizer.init_args: {exc}; fix that value") from None
        if not 0 <= groups[0].get("momentum", 0) < 1:  # torch checks >= 0 only; >= 1 never forgets a step
            raise EvaError(f"model.init_args.optimizer.init_args.momentum={groups[0]['momentum']} is impossible: "
                           "it must be in [0, 1) (0.9 is usual)")
        # tta is how a run evaluates, not what it trained: kept out of a checkpoint, so --model.init_args.tta (or the
        # config) decides it for `eva test --ckpt_path` (a checkpoint's hyper-parameters override the command line)
        self.save_hyperparameters(ignore=["optimizer", "tta"])
        self.num_classes, self.in_channels, self.optimizer_factory = num_classes, in_channels, optimizer
        self.lr, self.schedule, self.l1, self.label_smoothing = lr, schedule, l1, label_smoothing
        self.channels_last, self.compile = channels_last, compile
        self.tta, self.norm_lr_scale = tta, norm_lr_scale
        # validate_args (torch.unique on the host) and the NaN check (`if tensor.any()`) each sync every step
        accuracy = dict(task="multiclass", num_classes=num_classes, average="micro", validate_args=False)
        self.val_acc, self.test_acc = torchmetrics.Accuracy(**accuracy), torchmetrics.Accuracy(**accuracy)
        self.val_loss, self.test_loss = (torchmetrics.MeanMetric(nan_strategy="disable"),
                                         torchmetrics.MeanMetric(nan_strategy="disable"))
        # training: the epoch's sums on the device, one in-place add a step; kept over torchmetrics' MeanMetric +
        # MulticlassAccuracy, whose updates cost ≈ 0.25 ms more a step (benchmarks/RESULTS.md; #35: 0.55 vs 0.10 ms)
        self._train_sums: torch.Tensor | None = None
        self._train_seen = 0
        self.net: nn.Module  # set by the subclass

    # None: Lightning skips a non-callable hook, a call a step saved (as core/hooks.py); own ones: no super()
    on_train_batch_start = on_train_batch_end = None
    on_before_backward = on_after_backward = on_before_optimizer_step = on_before_zero_grad = None

    #: values that nn.Module never registers (no Parameter, buffer or submodule can be one of these exact types)
    _PLAIN_VALUES = frozenset({str, int, float, bool, type(None), torch.Tensor})

    def __setattr__(self, name: str, value) -> None:
        # nn.Module.__setattr__ searches parameters, buffers and submodules, which a plain attribute (in __dict__)
        # skips anyway; Lightning sets such ~35 times a step. Exact types: isinstance(value, nn.Parameter) is slow
        if type(value) in self._PLAIN_VALUES and name in self.__dict__:
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    def setup(self, stage: str) -> None:
        # not configure_model: overriding it makes WeightAveraging warn; setup runs before the optimiser is built
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile and "_compiled" not in self.__dict__:
            # kept out of the module tree so checkpoints hold the plain network's keys
            self.__dict__["_compiled"] = torch.compile(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the one place the input layout is set (batched augmentation gives NHWC, albumentations NCHW)
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return self.__dict__.get("_compiled", self.net)(x)

    def l1_penalty(self) -> torch.Tensor:
        """λ·Σ|w| over the weights of conv and linear layers."""
        weights = [m.weight for m in self.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        return self.l1 * sum(w.abs().sum() for w in weights)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        # each self.log is Python work: epoch means once, with the last batch (callbacks see them at epoch end)
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        penalty = self.l1_penalty() if self.l1 > 0 else loss.new_zeros(())
        n = y.shape[0]
        correct = (logits.detach().argmax(1) == y).sum().to(loss.dtype)  # float32 counts: exact to 16.7M a rank
        sums = torch.stack((loss.detach() * n, correct, penalty.detach() * n))
        self._train_sums = sums if self._train_sums is None else self._train_sums.add_(sums)
        self._train_seen += n
        if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train/loss_step", loss, on_step=True, on_epoch=False)
        if batch_idx + 1 >= self.trainer.num_training_batches:
            # summed over processes (DDP) once an epoch; sample-weighted means
            totals = self.trainer.strategy.reduce(
                torch.cat((self._train_sums, self._train_sums.new_tensor([self._train_seen]))), reduce_op="sum"
            )
            loss_sum, correct_sum, l1_sum, seen = totals
            self.log("train/loss", loss_sum / seen, on_step=False, on_epoch=True, prog_bar=True)
            self.log("train/acc", correct_sum / seen, on_step=False, on_epoch=True, prog_bar=True)
            if self.l1 > 0:
                self.log("train/l1", l1_sum / seen, on_step=False, on_epoch=True)
            self._reset_train_sums()
        return loss + penalty if self.l1 > 0 else loss

    def _reset_train_sums(self) -> None:
        self._train_sums, self._train_seen = None, 0

    def on_train_epoch_start(self) -> None:
        self._reset_train_sums()  # drop an interrupted epoch's leftovers

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # a mid-epoch checkpoint (a preempted run) carries the epoch's sums so far: its train/* stay whole on resume
        if self._train_sums is not None:
            checkpoint["train_epoch_sums"] = (self._train_sums.detach().cpu(), self._train_seen)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "train_epoch_sums" in checkpoint:  # moved to the device once the module is there
            self._train_sums, self._train_seen = checkpoint["train_epoch_sums"][0], int(checkpoint["train_epoch_sums"][1])

    def on_train_start(self) -> None:
        if self._train_sums is not None:
            self._train_sums = self._train_sums.to(self.device)

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits under ``tta``, except in the validation epochs of a fit (one view: they run every epoch)."""
        fitting = self._trainer is not None and self._trainer.state.fn == "fit"
        return tta_logits(self, x, "none" if fitting else self.tta)

    def _eval_step(self, batch, loss_metric: torchmetrics.MeanMetric, acc_metric: torchmetrics.Metric) -> dict:
        x, y = batch
        logits = self.eval_logits(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        acc_metric.update(logits, y)
        # once per sample: a short last batch counts for its size (weight= is ignored with nan_strategy="disable")
        loss_metric.update(loss.detach().expand(y.shape[0]))
        # what the image callbacks draw from (MisclassifiedGrid, ConfusionMatrixFigure): no second forward
        return {"loss": loss, "logits": logits}

    def _eval_epoch_end(self, stage: str, loss_metric: torchmetrics.MeanMetric, acc_metric: torchmetrics.Metric) -> None:
        if loss_metric.update_called:
            self.log(f"{stage}/loss", loss_metric.compute(), prog_bar=True)
            self.log(f"{stage}/acc", acc_metric.compute(), prog_bar=True)
        loss_metric.reset()
        acc_metric.reset()

    def validation_step(self, batch, batch_idx: int) -> dict:
        return self._eval_step(batch, self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_loss, self.val_acc)

    def test_step(self, batch, batch_idx: int) -> dict:
        return self._eval_step(batch, self.test_loss, self.test_acc)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_loss, self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.eval_logits(x).softmax(dim=1)

    def configure_optimizers(self):
        opt = make_optimizer(self.optimizer_factory, param_groups(self, self.norm_lr_scale), self.lr)
        s = self.schedule
        if s.interval == "step":  # only these need the run's length (and a trainer)
            trainer = self.trainer
            check_span(s, trainer.max_epochs, trainer.max_steps)
            sched = make_scheduler(opt, s, total_steps=int(trainer.estimated_stepping_batches),
                                   epochs=trainer.max_epochs or 1, hold=bool(trainer.fast_dev_run))
        else:
            sched = make_scheduler(opt, s)
        when = {"monitor": "val/loss"} if s.interval == "plateau" else {"interval": s.interval}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, **when, "name": "lr"}}
