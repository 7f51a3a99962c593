"""Image callbacks: misclassified grid, GradCAM overlays, confusion matrix; each a PNG and a TensorBoard image."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch
import torchmetrics
from matplotlib import pyplot as plt

from eva_lightning.analysis.figures import class_name, data_stats, denormalize, show
from eva_lightning.analysis.gradcam import eval_mode, gradcam, overlay
from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.core.errors import EvaError
from eva_lightning.runs.record import publish

log = logging.getLogger(__name__)

NORMALIZE = ("true", "pred", "all", "none")  # ConfusionMatrixFigure: torchmetrics' choices, "none" = counts


def _at_least(least: int, owner: str, option: str, value: int, example: str) -> int:
    if value < least:
        raise EvaError(f"{owner}.{option}={value} is impossible: use at least {least} ({example})")
    return value


def _check_every(owner: str, every_n_epochs: int, least: int = 1) -> int:
    return _at_least(least, owner, "every_n_epochs", every_n_epochs, "1 draws after every epoch's validation")


def _step_logits(owner: str, pl_module: L.LightningModule, outputs) -> torch.Tensor:
    """The logits the validation/test step returned for this batch (no second forward)."""
    logits = outputs.get("logits") if isinstance(outputs, dict) else None
    if not isinstance(logits, torch.Tensor):
        raise EvaError(
            f"{owner} draws from the logits the step computed, but {type(pl_module).__name__}'s validation/test "
            f"step returned {type(outputs).__name__}: return {{'loss': loss, 'logits': logits}} (as ImageClassifier does)"
        )
    return logits


def _when(trainer: L.Trainer) -> tuple[str, str]:
    """(title words, file-name part) of a figure: the epoch during fit; outside fit (``eva validate`` of a checkpoint,
    whose epoch Lightning does not restore there) the stage and the checkpoint's file name."""
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    stage = getattr(fn, "value", "fit")
    if stage == "fit":
        return f"epoch {trainer.current_epoch}", f"epoch{trainer.current_epoch}"
    ckpt = Path(trainer.ckpt_path).name if getattr(trainer, "ckpt_path", None) else "the weights as given"
    return f"eva {stage} of {ckpt}", stage


def _due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """A validation pass this callback draws for: not the sanity check, every n-th epoch (1-based)."""
    return not trainer.sanity_checking and every_n_epochs > 0 and (trainer.current_epoch + 1) % every_n_epochs == 0


@batch_hooks_only_where_used
class MisclassifiedGrid(L.Callback):
    """A grid of wrong validation predictions, captioned ``pred / true``.

    Saved as ``misclassified_epoch{N}.png`` (N counted from 0) and TensorBoard image ``misclassified``.

    Args:
        num_images: how many wrong predictions to show (25 → a 5×5 grid).
        every_n_epochs: draw after every n-th epoch's validation.
    """

    def __init__(self, num_images: int = 25, every_n_epochs: int = 1) -> None:
        self.num_images = _at_least(1, "MisclassifiedGrid", "num_images", num_images, "25: a 5×5 grid")
        self.every_n_epochs = _check_every("MisclassifiedGrid", every_n_epochs)
        self.on_validation_epoch_start()
        self.last_count = 0  # tiles in the last grid drawn (0: none found)

    def on_validation_epoch_start(self, *_) -> None:
        self._images, self._pred, self._true = [], [], []  # per batch: wrong images, predicted and true labels

    def _collected(self) -> int:
        return sum(len(t) for t in self._true)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.is_global_zero:
            return
        logits = _step_logits("MisclassifiedGrid", pl_module, outputs)  # checked in the sanity check too
        if not _due(trainer, self.every_n_epochs) or self._collected() >= self.num_images:
            return
        x, y, pred = batch[0], batch[1], logits.argmax(dim=1)
        wrong = pred != y  # the boolean indexing below reads back to the host: only until enough are found
        for parts, t in ((self._images, x.detach()), (self._pred, pred), (self._true, y)):
            parts.append(t[wrong].cpu())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (trainer.is_global_zero and _due(trainer, self.every_n_epochs)):
            return
        title, name = _when(trainer)
        if self._collected() == 0:
            self.last_count = 0
            log.info("MisclassifiedGrid: no misclassified validation images (%s), nothing written", title)
            return
        images, pred, true = (torch.cat(parts)[: self.num_images] for parts in (self._images, self._pred, self._true))
        mean, std, classes = data_stats(trainer)
        images = denormalize(images, mean, std)
        n, cols = len(images), math.ceil(math.sqrt(self.num_images))
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i < n:
                show(ax, images[i], f"{class_name(classes, int(pred[i]))} / {class_name(classes, int(true[i]))}")
            else:
                ax.set_axis_off()
        fig.suptitle(f"Misclassified (pred / true), {title}", fontsize=10)
        fig.tight_layout()
        publish(fig, trainer, "misclassified", f"misclassified_{name}.png")
        self.last_count = n
        self.on_validation_epoch_start()


@batch_hooks_only_where_used
class GradCAMGrid(L.Callback):
    """GradCAM for a fixed sample of validation images: image, heat map and overlay per row.

    Saved as ``gradcam_epoch{N}.png`` and TensorBoard image ``gradcam``.

    Args:
        target_layer: module path of the layer (e.g. ``net.layer3``); None → the module's ``gradcam_layer``.
        num_images: images in the sample, the same every epoch: the first validation image of each class
            (a class-sorted set would otherwise give one class), then the first others.
        every_n_epochs: draw after every n-th epoch's validation.
        true_class: also show the map for the true class (a fourth column).
    """

    def __init__(self, target_layer: str | None = None, num_images: int = 8, every_n_epochs: int = 1, true_class: bool = False) -> None:
        self.target_layer, self.true_class = target_layer, true_class
        self.num_images = _at_least(1, "GradCAMGrid", "num_images", num_images, "8: one row per image")
        self.every_n_epochs = _check_every("GradCAMGrid", every_n_epochs)
        self._picked: list[tuple[torch.Tensor, int]] = []  # (image, label), one per class
        self._spare: list[tuple[torch.Tensor, int]] = []  # the first others, to fill up
        self.last_maps: torch.Tensor | None = None

    def layer_for(self, pl_module: L.LightningModule) -> str:
        layer = self.target_layer or getattr(pl_module, "gradcam_layer", None)
        if not layer:
            raise EvaError(f"GradCAMGrid needs a target layer: {type(pl_module).__name__} names no gradcam_layer; "
                           "set trainer.callbacks[...].init_args.target_layer (e.g. net.layer3)")
        return layer

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        layer = self.layer_for(pl_module)
        try:  # fail at start, not after the first epoch
            pl_module.get_submodule(layer)
        except AttributeError:
            raise EvaError(f"GradCAMGrid.target_layer {layer!r} is not a module of {type(pl_module).__name__}") from None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._picked, self._spare = [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not (trainer.is_global_zero and _due(trainer, self.every_n_epochs)) or len(self._picked) >= self.num_images:
            return
        images, labels = batch[0], batch[1]
        seen = {label for _, label in self._picked}
        for i, label in enumerate(labels.tolist()):  # one host read per batch, on due epochs only
            if len(self._picked) >= self.num_images:
                break
            if label not in seen:
                seen.add(label)
                self._picked.append((images[i].detach().clone(), label))
            elif len(self._spare) < self.num_images:
                self._spare.append((images[i].detach().clone(), label))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (trainer.is_global_zero and _due(trainer, self.every_n_epochs)) or not self._picked:
            return
        sample = (self._picked + self._spare)[: self.num_images]
        self._picked, self._spare = [], []
        x = torch.stack([image for image, _ in sample])
        y = torch.tensor([label for _, label in sample], device=x.device)
        layer = self.layer_for(pl_module)
        # GradCAM needs gradients: a second, eager pass (a compiled net would recompile for this batch)
        with eval_mode(pl_module), torch.no_grad(), torch.compiler.set_stance("force_eager"):
            pred = pl_module(x).argmax(dim=1)
        maps = gradcam(pl_module, x, layer, class_idx=pred)
        maps_true = gradcam(pl_module, x, layer, class_idx=y) if self.true_class else None
        self.last_maps = maps.cpu()
        mean, std, classes = data_stats(trainer)
        images = denormalize(x, mean, std)
        cols = 4 if self.true_class else 3
        fig, axes = plt.subplots(len(x), cols, figsize=(1.9 * cols, 1.9 * len(x)), squeeze=False)
        for i in range(len(x)):
            p, t = int(pred[i]), int(y[i])
            show(axes[i, 0], images[i], f"true: {class_name(classes, t)}")
            axes[i, 1].imshow(maps[i].cpu().numpy(), cmap="jet", vmin=0, vmax=1)
            axes[i, 1].set_axis_off()
            axes[i, 1].set_title("GradCAM", fontsize=8)
            show(axes[i, 2], overlay(images[i], maps[i]), f"pred: {class_name(classes, p)}")
            if maps_true is not None:
                show(axes[i, 3], overlay(images[i], maps_true[i]), f"for true: {class_name(classes, t)}")
        title, name = _when(trainer)
        fig.suptitle(f"GradCAM at {layer}, {title}", fontsize=10)
        fig.tight_layout()
        publish(fig, trainer, "gradcam", f"gradcam_{name}.png")


@batch_hooks_only_where_used
class ConfusionMatrixFigure(L.Callback):
    """Confusion matrix (torchmetrics) of the validation and test sets as a figure.

    Saved as ``confusion_{val|test}_epoch{N}.png`` and TensorBoard image ``confusion_matrix/{val|test}``.
    Every process accumulates its share; the matrix is summed across processes, rank 0 draws it.

    Args:
        every_n_epochs: draw after every n-th epoch's validation (0: only at test).
        normalize: ``true`` (rows sum to 1), ``pred``, ``all`` or ``none`` (counts).
    """

    def __init__(self, every_n_epochs: int = 1, normalize: str = "none") -> None:
        if normalize not in NORMALIZE:
            raise EvaError(f"ConfusionMatrixFigure.normalize={normalize!r} is unknown: use one of {', '.join(NORMALIZE)}")
        self.every_n_epochs, self.normalize = _check_every("ConfusionMatrixFigure", every_n_epochs, least=0), normalize
        self.matrix: torchmetrics.Metric | None = None
        self.last: torch.Tensor | None = None

    def _reset(self, pl_module: L.LightningModule) -> None:
        if (num_classes := getattr(pl_module, "num_classes", None)) is None:
            raise EvaError("ConfusionMatrixFigure needs a module with num_classes")
        norm = None if self.normalize == "none" else self.normalize
        # validate_args=False: the checks read the targets back to the host, a device sync every batch
        self.matrix = torchmetrics.ConfusionMatrix(task="multiclass", num_classes=num_classes, normalize=norm,
                                                   validate_args=False).to(pl_module.device)

    def _update(self, pl_module, outputs, batch) -> None:
        logits = _step_logits("ConfusionMatrixFigure", pl_module, outputs)
        self.matrix.update(logits.argmax(dim=1), batch[1])

    def _draw(self, trainer, stage: str) -> None:
        value = self.matrix.compute()  # collective across processes: every rank calls it
        self.last = value.cpu()
        if not trainer.is_global_zero:
            return
        classes, n = data_stats(trainer)[2], value.shape[0]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * n + 2), max(3.5, 0.5 * n + 1.5)))
        self.matrix.plot(val=value, ax=ax, add_text=n <= 20, labels=list(classes) if classes else None)
        ax.set_title(f"Confusion matrix ({stage}, epoch {trainer.current_epoch})")
        fig.tight_layout()
        publish(fig, trainer, f"confusion_matrix/{stage}", f"confusion_{stage}_epoch{trainer.current_epoch}.png")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if _due(trainer, self.every_n_epochs):
            self._reset(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if _due(trainer, self.every_n_epochs):
            self._update(pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if _due(trainer, self.every_n_epochs):
            self._draw(trainer, "val")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(pl_module, outputs, batch)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, "test")
