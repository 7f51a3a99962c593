"""Test-time augmentation: the logits averaged over views of each image (``ImageClassifier(tta=...)``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

TTA = Literal["none", "flip", "flip_translate"]


def _flip_mean(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (forward(x) + forward(x.flip(3)))


def tta_logits(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: TTA = "none") -> torch.Tensor:
    """``forward``'s logits for a batch ``x`` (N, C, H, W) under test-time augmentation ``tta``.

    ``none``: one view. ``flip``: the image and its mirror image, each 1/2. ``flip_translate`` (airbench94's level 2):
    half on ``flip``'s two views, half on the same two views of the image moved one pixel up-left and one pixel
    down-right (reflect padding): six views weighted 1/4, 1/4 and 1/8 each.
    """
    if tta == "none":
        return forward(x)
    if tta == "flip":
        return _flip_mean(forward, x)
    if tta != "flip_translate":
        raise ValueError(f"unknown test-time augmentation {tta!r}: choose none, flip or flip_translate")
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    moved = (padded[:, :, :h, :w], padded[:, :, 2:, 2:])  # content shifted down-right / up-left by one pixel
    return 0.5 * _flip_mean(forward, x) + 0.25 * (_flip_mean(forward, moved[0]) + _flip_mean(forward, moved[1]))
