"""WarmupEMA: Lightning's weight averaging with an EMA whose decay warms up (timm / TF style)."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor

from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.core.errors import EvaError


def ema_decay(n: int, decay: float) -> float:
    """The decay of the update that follows ``n`` earlier updates: ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1 + n) / (10 + n))


def warmup_ema_multi_avg_fn(decay: float):
    """An ``AveragedModel`` ``multi_avg_fn``: ``ema = d * ema + (1 - d) * current``, ``d = ema_decay(n, decay)``;
    ``n`` stays a device tensor (no host sync per step); integer buffers are copied, not averaged."""

    @torch.no_grad()
    def update(ema: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        n = n_averaged.to(torch.float64)
        d = torch.clamp((1 + n) / (10 + n), max=decay)
        if not ema[0].is_floating_point():  # the lists are grouped by device and dtype
            for e, c in zip(ema, current):
                e.copy_(c)
            return
        weight = (1 - d).to(ema[0].dtype)
        for e, c in zip(ema, current):
            e.lerp_(c, weight)

    return update


@batch_hooks_only_where_used
class WarmupEMA(WeightAveraging):
    """Exponential moving average of the weights (and buffers) with timm's decay warm-up.

    Update ``n`` (one per optimiser step) uses ``min(decay, (1 + n) / (10 + n))``. Lightning's ``EMAWeightAveraging``
    uses ``decay`` from the first step: after MNIST's first epoch its average is still ~39% random initialisation
    and validates at ~11% (docs/internals.md). The rest is Lightning's ``WeightAveraging``.

    Args:
        decay: the long-run decay (horizon about ``1 / (1 - decay)`` steps).
        device: where the average is kept; None: the model's device.
        use_buffers: average the buffers (BatchNorm statistics) too.
    """

    def __init__(self, decay: float = 0.999, device: str | None = None, use_buffers: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise EvaError(f"WarmupEMA decay={decay}: use a value in [0, 1), e.g. 0.998")
        super().__init__(device=device, use_buffers=use_buffers, multi_avg_fn=warmup_ema_multi_avg_fn(decay))
        self.decay = decay

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._average_model is None:
            # validate/test/predict: the checkpoint's state_dict is the average already; nothing to restore
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
