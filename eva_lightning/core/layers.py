"""Layers shared by the assignments: Ghost batch norm, the norm-layer factory and the dropout check."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from eva_lightning.core.errors import EvaError


def check_dropout(p: float, option: str = "model.init_args.dropout") -> float:
    """``p`` when it is a dropout probability in [0, 1); else an :class:`EvaError` naming ``option``."""
    if not 0 <= p < 1:
        raise EvaError(f"{option}={p} is impossible: a dropout probability must be in [0, 1) (0: no dropout)")
    return p


def check_virtual_batch_size(n: int, option: str = "model.init_args.virtual_batch_size") -> int:
    """``n`` when it is a usable ghost-batch size; else an :class:`EvaError` naming ``option``."""
    if n < 1:
        raise EvaError(f"{option}={n} is impossible: use at least 1 (samples per ghost batch, e.g. 32)")
    return n


class GhostBatchNorm(nn.BatchNorm2d):
    """Batch norm over ghost batches of ``virtual_batch_size``; running statistics update per chunk with the momentum
    divided by the chunks (as MosaicML composer's). An ``nn.BatchNorm2d`` (same keys; no L1 on it)."""

    def __init__(self, num_features: int, virtual_batch_size: int = 32, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        if virtual_batch_size < 1:
            raise ValueError(f"virtual_batch_size must be >= 1, got {virtual_batch_size}")
        self.virtual_batch_size = virtual_batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] <= self.virtual_batch_size:
            return super().forward(x)
        chunks = x.chunk(math.ceil(x.shape[0] / self.virtual_batch_size))
        momentum = self.momentum
        if momentum is not None:
            # torch.chunk may return fewer chunks than asked (6 rows in 4 -> 2+2+2): divide by the real count
            self.momentum = momentum / len(chunks)
        try:
            return torch.cat([super(GhostBatchNorm, self).forward(c) for c in chunks])
        finally:
            self.momentum = momentum

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"


NormKind = Literal["bn", "gbn"]


def norm2d(kind: NormKind, num_features: int, virtual_batch_size: int = 32) -> nn.BatchNorm2d:
    """The 2-d norm layer named by ``kind``: ``bn`` (``nn.BatchNorm2d``) or ``gbn`` (:class:`GhostBatchNorm`)."""
    if kind == "bn":
        return nn.BatchNorm2d(num_features)
    if kind == "gbn":
        return GhostBatchNorm(num_features, virtual_batch_size=virtual_batch_size)
    raise ValueError(f"unknown norm kind {kind!r}: choose 'bn' or 'gbn'")
