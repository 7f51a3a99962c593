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
    """An ``AveragedModel`` ``multi_avg_fn``: ``ema = d * ema + (1 - d) * current`` with ``d = ema_decay(n, decay)``.

    ``n`` is ``AveragedModel.n_averaged`` (a device tensor: no host sync per step). Integer buffers
    (BatchNorm's ``num_batches_tracked``) are copied from the model rather than averaged.
    """

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

    After ``n`` updates (one per optimiser step) the next one uses ``decay_n = min(decay, (1 + n) / (10 + n))``:
    0.18, 0.25, 0.31 … at first, 0.9 after 80 steps, ``decay`` from ``n = (10·decay - 1) / (1 - decay)`` on (4,490
    steps for 0.998). Lightning's ``EMAWeightAveraging(decay=0.998)`` uses 0.998 from the first step, so after
    MNIST's first epoch (469 steps of 128) the average still holds 0.998^469 ≈ 39% of the random initialisation and
    validates at about 11%; with the warm-up it follows the model early, then settles into the long average.

    Everything else is Lightning's ``WeightAveraging``: validation runs on the average, checkpoints hold it as
    ``state_dict`` (the live weights in ``current_model_state``, the update count in ``averaging_state``, so a
    resumed run continues the same schedule), and the average replaces the weights when training ends.

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
            # validate/test/predict: the checkpoint's state_dict is the average already (on_save_checkpoint
            # put it there) and no average is kept, so there is nothing to restore and nothing to warn about
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
