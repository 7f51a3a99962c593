""":class:`WhiteningInit`: airbench94's first layer, whitening filters fitted to the training images."""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch import nn

from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.core.errors import EvaError
from eva_lightning.core.layers import PatchWhitening
from eva_lightning.data.transforms import build_pipeline

log = logging.getLogger(__name__)


def training_images(datamodule, n: int, seed: int) -> torch.Tensor:
    """``n`` training images drawn at random with ``seed``, as evaluation sees them (the test pipeline: normalised,
    never augmented): float (n, C, H, W). The training split may be stored class by class, hence the draw."""
    split = getattr(datamodule, "train_set", None)
    images = getattr(split, "images", None)
    if images is None:
        raise EvaError("WhiteningInit reads the training images of eva's data module (data.dataset ...); "
                       "this run's data module has no training split with images")
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    pipeline = build_pipeline(datamodule.test_specs, datamodule.mean, datamodule.std)
    return torch.stack([torch.as_tensor(pipeline(image=img.numpy())["image"]) for img in images[idx]]).float()


class _Captured(Exception):
    """Stops a forward pass once the input of the layer being fitted is captured."""


@torch.no_grad()
def fit_whitening(model: nn.Module, images: torch.Tensor) -> list[PatchWhitening]:
    """Fit every unfitted :class:`PatchWhitening` in ``model`` (in order) to the input it receives from ``images``
    (``model(images)`` run up to that layer, in eval mode); the layers fitted."""
    fitted = []
    for layer in [m for m in model.modules() if isinstance(m, PatchWhitening) and not bool(m.fitted)]:
        seen: list[torch.Tensor] = []

        def capture(module, args):
            seen.append(args[0])
            raise _Captured

        handle, was_training = layer.register_forward_pre_hook(capture), model.training
        model.eval()
        try:
            model(images)
        except _Captured:
            pass
        finally:
            handle.remove()
            model.train(was_training)
        layer.fit(seen[0].float())
        fitted.append(layer)
    return fitted


@batch_hooks_only_where_used
class WhiteningInit(L.Callback):
    """Fits each :class:`~eva_lightning.core.layers.PatchWhitening` layer to ``images`` training images when fit starts.

    A layer already fitted (a resumed run's checkpoint holds it) stays as it is; the images: :func:`training_images`.

    Args:
        images: how many training images (airbench94: 5,000).
        bias_epochs: train the layers' biases for this many epochs, then freeze them (airbench94: 3); None: always.
    """

    def __init__(self, images: int = 5000, bias_epochs: int | None = None) -> None:
        if images < 1:
            raise EvaError(f"WhiteningInit images={images} is impossible: use at least 1 (airbench94: 5000)")
        if bias_epochs is not None and bias_epochs < 0:
            raise EvaError(f"WhiteningInit bias_epochs={bias_epochs} is impossible: use >= 0, or None (always trained)")
        self.images, self.bias_epochs = images, bias_epochs

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        layers = [m for m in pl_module.modules() if isinstance(m, PatchWhitening)]
        if not layers:
            log.warning("WhiteningInit: the model has no PatchWhitening layer; nothing to fit")
            return
        if all(bool(m.fitted) for m in layers):
            return
        images = training_images(trainer.datamodule, self.images, torch.initial_seed())
        for layer in fit_whitening(pl_module, images.to(pl_module.device)):
            log.info("WhiteningInit: fitted %d filters of %s to %d training images", layer.out_channels,
                     type(layer).__name__, len(images))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bias_epochs is None:
            return
        for m in pl_module.modules():
            if isinstance(m, PatchWhitening):
                # with no gradient SGD skips the bias: no step, no momentum, no weight decay (as airbench)
                m.bias.requires_grad_(trainer.current_epoch < self.bias_epochs)
