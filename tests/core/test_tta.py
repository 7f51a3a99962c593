"""Test-time augmentation (core/tta.py, ImageClassifier(tta=...)): logits averaged over the views, only outside fit."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eva_lightning.core.module import ImageClassifier
from eva_lightning.core.tta import tta_logits


class Asymmetric(nn.Module):
    """Logits that change when the image is mirrored or moved: a fixed random weight per pixel and class."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(classes, 3 * 6 * 6, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def moved(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The image moved by (dy, dx) pixels, borders reflected (written out, independently of F.pad)."""
    h, w = x.shape[-2:]
    reflect = lambda i, n: -i if i < 0 else 2 * (n - 1) - i if i >= n else i  # noqa: E731
    rows = torch.tensor([reflect(i - dy, h) for i in range(h)])
    cols = torch.tensor([reflect(j - dx, w) for j in range(w)])
    return x[:, :, rows][:, :, :, cols]


def test_views_and_their_weights():
    net, x = Asymmetric(), torch.randn(5, 3, 6, 6)
    plain, mirror = net(x), net(x.flip(3))
    assert not torch.allclose(plain, mirror)  # the net tells the views apart
    torch.testing.assert_close(tta_logits(net, x, "none"), plain)
    torch.testing.assert_close(tta_logits(net, x, "flip"), (plain + mirror) / 2)
    views = [moved(x, 1, 1), moved(x, -1, -1)]
    expected = (plain + mirror) / 4 + sum(net(v) + net(v.flip(3)) for v in views) / 8
    torch.testing.assert_close(tta_logits(net, x, "flip_translate"), expected)
    with pytest.raises(ValueError, match="flip_translate"):
        tta_logits(net, x, "rotate")


class AsymmetricModel(ImageClassifier):
    def __init__(self, **kwargs) -> None:
        super().__init__(num_classes=4, **kwargs)
        self.net = Asymmetric()


def test_test_and_validate_average_the_views_fit_validation_does_not():
    x, y = torch.randn(16, 3, 6, 6), torch.randint(0, 4, (16,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = AsymmetricModel(tta="flip", optimizer=lambda p: torch.optim.SGD(p, lr=0.0))  # lr 0: weights stay
    assert "tta" not in model.hparams  # not in checkpoints: `eva test --ckpt_path X --model.init_args.tta none` wins
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(model, loader, loader)
    with torch.no_grad():
        one_view = F.cross_entropy(model.net(x), y)
        two_views = F.cross_entropy((model.net(x) + model.net(x.flip(3))) / 2, y)
    assert not torch.isclose(one_view, two_views)
    torch.testing.assert_close(trainer.callback_metrics["val/loss"], one_view)  # fit's validation: one view
    assert trainer.validate(model, loader, verbose=False)[0]["val/loss"] == pytest.approx(float(two_views), rel=1e-5)
    assert trainer.test(model, loader, verbose=False)[0]["test/loss"] == pytest.approx(float(two_views), rel=1e-5)
    probs = torch.cat(trainer.predict(model, DataLoader(x, batch_size=8)))
    torch.testing.assert_close(probs, ((model.net(x) + model.net(x.flip(3))) / 2).softmax(1).detach())
