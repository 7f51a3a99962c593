"""Convolution building blocks shared by the assignments: ``conv_bn`` (MNIST, S4-S6) and the rest (CIFAR-10, S7-S11)."""

from __future__ import annotations

from typing import Callable

from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, padding: int = 0, dropout: float | None = 0.0,
            norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d) -> nn.Sequential:
    """conv (no bias: the norm shifts) - norm - ReLU - dropout; ``norm`` / ``dropout`` None leaves that layer out."""
    layers = [nn.Conv2d(cin, cout, k, padding=padding, bias=False), *([norm(cout)] if norm else []), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout is not None else []))


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 conv, 'same' padding for any dilation, no bias (a BN follows and carries the shift)."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """1x1 conv without bias."""
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def _bn_relu(conv: nn.Module, cout: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True), *([nn.Dropout(dropout)] if dropout > 0 else []))


def conv_bn_relu(cin: int, cout: int, dilation: int = 1, dropout: float = 0.0) -> nn.Sequential:
    """3x3 conv (padded, optionally dilated) - BN - ReLU [- dropout]."""
    return _bn_relu(conv3x3(cin, cout, dilation=dilation), cout, dropout)


class DepthwiseSeparableConv2d(nn.Sequential):
    """Depthwise k x k ('same', optionally dilated), then pointwise 1x1: ``cin*k*k + cin*cout`` weights."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation, groups=cin, bias=False),
            conv1x1(cin, cout),
        )


def dws_bn_relu(cin: int, cout: int, dropout: float = 0.0) -> nn.Sequential:
    """DepthwiseSeparableConv2d - BN - ReLU [- dropout]."""
    return _bn_relu(DepthwiseSeparableConv2d(cin, cout), cout, dropout)
