""":class:`WarmupEMA`: Lightning's weight averaging with an EMA whose decay warms up (timm's or airbench94's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor

from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.core.errors import EvaError


def ema_decay(n: int, decay: float) -> float:
    """The decay of the update that follows ``n`` earlier updates: ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1 + n) / (10 + n))


def lerp_multi_avg_fn(decay_after: Callable[[Tensor], Tensor]):
    """An ``AveragedModel`` ``multi_avg_fn``: ``ema = d * ema + (1 - d) * current`` with ``d = decay_after(n)``, ``n`` the
    earlier updates as a float64 device tensor (no host sync per step); integer buffers are copied, not averaged."""

    @torch.no_grad()
    def update(ema: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        if not ema[0].is_floating_point():  # the lists are grouped by device and dtype
            for e, c in zip(ema, current):
                e.copy_(c)
            return
        weight = (1 - decay_after(n_averaged.to(torch.float64))).to(ema[0].dtype)
        for e, c in zip(ema, current):
            e.lerp_(c, weight)

    return update


def warmup_ema_multi_avg_fn(decay: float):
    """:func:`lerp_multi_avg_fn` with ``d = ema_decay(n, decay)``."""
    return lerp_multi_avg_fn(lambda n: torch.clamp((1 + n) / (10 + n), max=decay))


def cubic_decay(step: int, total_steps: int, decay: float) -> float:
    """airbench94's lookahead decay at optimiser step ``step`` of ``total_steps``: ``decay * (step / total_steps)**3``."""
    return decay * min(1.0, step / total_steps) ** 3


def cubic_ema_multi_avg_fn(decay: float, every_n_steps: int, total_steps: Callable[[], int]):
    """:func:`lerp_multi_avg_fn` with :func:`cubic_decay`; the update after ``n`` earlier ones falls on step
    ``(n + 1) * every_n_steps`` (``total_steps()`` is read when it runs: the run's length is known at fit start)."""
    return lerp_multi_avg_fn(lambda n: decay * torch.clamp((n + 1) * every_n_steps / total_steps(), max=1.0) ** 3)


@batch_hooks_only_where_used
class WarmupEMA(WeightAveraging):
    """Exponential moving average of the weights (and buffers) with timm's decay warm-up.

    Update ``n`` (one per optimiser step) uses ``min(decay, (1 + n) / (10 + n))``, not ``decay`` from the first step
    as Lightning's ``EMAWeightAveraging`` (why: docs/internals.md); the rest is Lightning's ``WeightAveraging``.
    With ``warmup: cubic`` update ``n`` at step ``t`` of ``T`` uses ``decay * (t / T)**3`` instead (airbench94's
    lookahead); ``lookahead: true`` copies the average back into the live weights after each update, so training
    continues from it (Zhang et al.'s Lookahead, as airbench94 does every 5 steps).

    Args:
        decay: the long-run decay of one update (horizon about ``1 / (1 - decay)`` updates).
        device: where the average is kept; None: the model's device.
        use_buffers: average the buffers (BatchNorm statistics) too.
        every_n_steps: update after every n-th optimiser step.
        warmup: ``timm``: ``min(decay, (1 + n) / (10 + n))``; ``cubic``: ``decay * (step / total_steps)**3``.
        lookahead: after each update the live weights (and buffers) become the average.
    """

    def __init__(self, decay: float = 0.999, device: str | None = None, use_buffers: bool = True,
                 every_n_steps: int = 1, warmup: Literal["timm", "cubic"] = "timm", lookahead: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise EvaError(f"WarmupEMA decay={decay}: use a value in [0, 1), e.g. 0.998")
        if every_n_steps < 1:
            raise EvaError(f"WarmupEMA every_n_steps={every_n_steps}: use at least 1 (update after every n-th step)")
        if warmup == "cubic":
            update = cubic_ema_multi_avg_fn(decay, every_n_steps, lambda: self._total_steps)
        elif warmup == "timm":
            update = warmup_ema_multi_avg_fn(decay)
        else:
            raise EvaError(f"WarmupEMA warmup={warmup!r}: choose timm or cubic")
        super().__init__(device=device, use_buffers=use_buffers, multi_avg_fn=update)
        self.decay, self.every_n_steps, self.warmup, self.lookahead = decay, every_n_steps, warmup, lookahead
        self._total_steps = 1

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and (step_idx + 1) % self.every_n_steps == 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._total_steps = max(1, int(trainer.estimated_stepping_batches))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        updated_before = self._latest_update_step
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.lookahead and self._latest_update_step != updated_before:
            self._restart_from_average(pl_module)

    @torch.no_grad()
    def _restart_from_average(self, pl_module) -> None:
        average = self._average_model.module
        for a, c in zip((*average.parameters(), *average.buffers()), (*pl_module.parameters(), *pl_module.buffers())):
            c.copy_(a)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._average_model is None:
            # validate/test/predict: the checkpoint's state_dict is the average already; nothing to restore
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
