"""Layers shared by the assignments: Ghost batch norm, the norm-layer factory, the dropout check and patch whitening."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
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


class PatchWhitening(nn.Conv2d):
    """A k x k conv (no padding) whose filters whiten the image patches it sees: ``2·C·k²`` channels, each
    eigenvector of the patch covariance scaled by ``1/sqrt(eigenvalue + eps)``, and its negative (a GELU after it
    then passes both signs). :meth:`fit` sets the filters (``callbacks.WhiteningInit`` calls it when fit starts);
    they are never trained; the bias trains (airbench94's first layer, docs/cifar.md)."""

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4) -> None:
        super().__init__(in_channels, 2 * in_channels * kernel_size**2, kernel_size, padding=0, bias=True)
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (it bounds the gain of the weakest direction), got {eps}")
        self.eps = eps
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)
        # in the checkpoint: a resumed or fine-tuned run keeps the filters it was fitted with
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, inputs: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """Set the filters from ``inputs`` (float (N, C, H, W), what the layer receives); the eigenvalues, largest first."""
        dim = self.weight[0].numel()
        cov = torch.zeros(dim, dim, dtype=torch.float64, device=inputs.device)
        count = 0
        for x in inputs.split(chunk):
            patches = F.unfold(x.double(), self.kernel_size)  # (B, C·k·k, positions), the order of a conv weight
            cov += torch.einsum("bip,bjp->ij", patches, patches)
            count += patches.shape[0] * patches.shape[2]
        # the second moment, as airbench (normalised images are near zero mean); eigh: ascending, so flipped
        eigenvalues, eigenvectors = torch.linalg.eigh(cov / count)
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        filters = eigenvectors.T / (eigenvalues.clamp_min(0) + self.eps).sqrt()[:, None]
        filters = filters.reshape(dim, *self.weight.shape[1:])
        self.weight.copy_(torch.cat((filters, -filters)).to(self.weight))
        self.fitted.fill_(True)
        return eigenvalues

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"
