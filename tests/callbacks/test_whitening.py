"""PatchWhitening (core/layers.py) and WhiteningInit: the filters read back whiten the patches they were fitted to."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import write_cifar_jpeg

from eva_lightning.assignments.cifar10_fast import Cifar10FastModel
from eva_lightning.callbacks import WhiteningInit
from eva_lightning.callbacks.whitening import training_images
from eva_lightning.core.errors import EvaError
from eva_lightning.core.layers import PatchWhitening
from eva_lightning.data import VisionDataModule


def whitened_second_moment(layer: PatchWhitening, images: torch.Tensor) -> torch.Tensor:
    """E[z zᵀ] over every position of the first half of the filters' outputs (bias left out)."""
    half = layer.out_channels // 2
    z = F.conv2d(images.double(), layer.weight[:half].double())
    z = z.permute(0, 2, 3, 1).reshape(-1, half)
    return z.T @ z / len(z)


def patch_eigenvalues(images: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Eigenvalues of the k x k patches' second moment, largest first, computed here independently of the layer."""
    patches = F.unfold(images.double(), k).transpose(1, 2).reshape(-1, images.shape[1] * k * k)
    return torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)


def test_fitted_filters_whiten_correlated_patches():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(64, 3, 20, 20, generator=g)
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.6, 0.5], [0.0, 0.0, 0.3]])
    images = torch.einsum("ij,bjhw->bihw", mix, F.avg_pool2d(noise, 3, 1, 1) * 15)  # neighbours and channels correlated
    layer = PatchWhitening(3, kernel_size=2, eps=5e-4)
    raw = torch.nn.Unfold(2)(images.double()).transpose(1, 2).reshape(-1, 12)
    assert (raw.T @ raw / len(raw) - torch.eye(12, dtype=torch.float64)).abs().max() > 0.5  # far from white
    eigenvalues = layer.fit(images, chunk=16)
    assert bool(layer.fitted) and layer.out_channels == 24 and not layer.weight.requires_grad
    assert eigenvalues.min() > 0.05 and torch.all(eigenvalues[:-1] >= eigenvalues[1:])
    torch.testing.assert_close(layer.weight[12:], -layer.weight[:12])  # each filter and its negative
    cov = whitened_second_moment(layer, images)
    torch.testing.assert_close(cov, torch.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-6, rtol=1e-6)
    assert (cov - torch.eye(12, dtype=torch.float64)).abs().max() < 0.01  # ≈ identity


class BiasRecord(L.Callback):
    def __init__(self) -> None:
        self.bias, self.trained = [], []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.bias.append(pl_module.net.whiten.bias.detach().clone())
        self.trained.append(pl_module.net.whiten.bias.requires_grad)


def _fit(model, dm, callbacks, epochs: int) -> None:
    L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", limit_train_batches=3,
              limit_val_batches=1, num_sanity_val_steps=0).fit(model, dm)


def test_whitening_init_fits_the_layer_to_training_images_when_fit_starts(tmp_path):
    dm = VisionDataModule(dataset="cifar10", data_dir=str(write_cifar_jpeg(tmp_path)), download=False, batch_size=16,
                          loader="batched", val_split=0.1)
    model = Cifar10FastModel(widths=[8, 16, 16], optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.85))
    before = model.net.whiten.weight.clone()
    record = BiasRecord()
    L.seed_everything(3)
    _fit(model, dm, [WhiteningInit(images=60, bias_epochs=1), record], epochs=2)
    layer = model.net.whiten
    assert bool(layer.fitted) and not torch.equal(layer.weight, before)
    # read back: the filters whiten the patches of the 60 training images the callback drew with the run's seed:
    # E[z zᵀ] = diag(λ / (λ + eps)), the identity in every direction whose variance λ is well above eps
    images = training_images(dm, 60, seed=3)
    cov, lam = whitened_second_moment(layer, images), patch_eigenvalues(images)
    torch.testing.assert_close(cov, torch.diag(lam / (lam + 5e-4)), atol=1e-5, rtol=1e-4)
    strong = lam > 100 * 5e-4
    assert strong.sum() >= 4 and (cov.diagonal()[strong] > 0.99).all()  # (grey test images: weak colour)
    # the bias trains in epoch 0 only; the filters never
    assert record.trained == [True, False] and not torch.equal(record.bias[0], torch.zeros(24))
    torch.testing.assert_close(record.bias[1], record.bias[0], rtol=0, atol=0)
    # a fitted layer (a resumed run's) is left as it is
    fitted = layer.weight.clone()
    _fit(model, dm, [WhiteningInit(images=10)], epochs=1)
    torch.testing.assert_close(model.net.whiten.weight, fitted, rtol=0, atol=0)
    # without the callback the frozen layer would stay random: refused when fit starts
    with pytest.raises(EvaError, match="WhiteningInit"):
        _fit(Cifar10FastModel(widths=[8, 16, 16]), dm, [], epochs=1)
