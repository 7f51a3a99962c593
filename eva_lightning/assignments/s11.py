"""S11: David Page's ResNet-9 ("How to train your ResNet"), one-cycle, batch 512, 24 epochs: prep 64x32 ->
layer1 128x16 (+ResBlock) -> layer2 256x8 -> layer3 512x4 (+ResBlock) -> MaxPool(4) -> FC x 0.125."""

from __future__ import annotations

import torch
from torch import nn

from eva_lightning.core.module import ImageClassifier
from eva_lightning.core.blocks import conv3x3, conv_bn_relu
from eva_lightning.core.errors import EvaError


class ResBlock(nn.Sequential):
    """conv-BN-ReLU-conv-BN-ReLU at constant width (added to its input by :class:`ResLayer`)."""

    def __init__(self, channels: int) -> None:
        super().__init__(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels))


class ResLayer(nn.Module):
    """X = conv 3x3 - MaxPool(2) - BN - ReLU; returns X + ResBlock(X), or X when ``residual`` is False."""

    def __init__(self, cin: int, cout: int, residual: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv3x3(cin, cout), nn.MaxPool2d(2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.res = ResBlock(cout) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.res is None else x + self.res(x)


class CustomResNet(nn.Module):
    """ResNet-9: 6,573,120 parameters (3x32x32 input, 10 classes), ``width`` prep channels doubled by each layer."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64, logit_scale: float = 0.125) -> None:
        super().__init__()
        self.prep = conv_bn_relu(in_channels, width)
        self.layer1 = ResLayer(width, width * 2, residual=True)
        self.layer2 = ResLayer(width * 2, width * 4, residual=False)
        self.layer3 = ResLayer(width * 4, width * 8, residual=True)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(width * 8, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(torch.flatten(self.pool(x), 1)) * self.logit_scale


class S11Model(ImageClassifier):
    """:class:`CustomResNet` as a LightningModule.

    Args:
        width: prep-layer channels (64: Page's; smaller only for quick tests).
        logit_scale: factor on the logits; Page's 0.125 keeps the early softmax soft, which trains faster.
        **kwargs: :class:`~eva_lightning.core.module.ImageClassifier` arguments.
    """

    gradcam_layer = "net.layer3"

    def __init__(self, width: int = 64, logit_scale: float = 0.125, **kwargs) -> None:
        super().__init__(**kwargs)
        if width < 1:
            raise EvaError(f"model.init_args.width={width} is impossible: use at least 1 channel (64: Page's)")
        if not logit_scale > 0:
            raise EvaError(f"model.init_args.logit_scale={logit_scale} is impossible: use a factor > 0 (Page: 0.125)")
        self.net = CustomResNet(self.in_channels, self.num_classes, width, logit_scale)
