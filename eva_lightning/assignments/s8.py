"""S8 (and S9, S10 with other pipelines and schedules): torchvision's ResNet18 with He et al.'s CIFAR stem (3x3,
no max-pool: a 32x32 image keeps its size until ``layer2``; stem 64x32 ... layer4 512x4, GAP, FC)."""

from __future__ import annotations

import torch
from torch import nn

from eva_lightning.core.module import ImageClassifier
from eva_lightning.core.blocks import conv1x1, conv3x3
from eva_lightning.core.errors import EvaError


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with a CIFAR stem: ``layers`` blocks per stage, ``width`` stem channels doubled per stage;
    ``zero_init_residual``: each block's last BN starts at zero, so each begins as the identity (Goyal et al.)."""

    def __init__(self, layers: list[int], in_channels: int = 3, num_classes: int = 10, width: int = 64,
                 zero_init_residual: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(width, width, layers[0])
        self.layer2 = self._make_layer(width, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 2, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 4, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif zero_init_residual and isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @staticmethod
    def _make_layer(cin: int, cout: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or cin != cout:
            downsample = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
        first = BasicBlock(cin, cout, stride, downsample)
        return nn.Sequential(first, *(BasicBlock(cout, cout) for _ in range(1, blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(in_channels: int = 3, num_classes: int = 10, width: int = 64) -> ResNet:
    """ResNet18 with the CIFAR stem: 11,173,962 parameters at width 64 and 10 classes."""
    return ResNet([2, 2, 2, 2], in_channels, num_classes, width)


class S8Model(ImageClassifier):
    """ResNet18 (CIFAR stem) as a LightningModule.

    Args:
        width: stem/``layer1`` channels (64: ResNet18; smaller only for quick tests).
        **kwargs: :class:`~eva_lightning.core.module.ImageClassifier` arguments.
    """

    # layer3's 8x8 maps localise better than layer4's 4x4 ones
    gradcam_layer = "net.layer3"

    def __init__(self, width: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        if width < 1:
            raise EvaError(f"model.init_args.width={width} is impossible: use at least 1 channel (64: ResNet18)")
        self.net = resnet18(self.in_channels, self.num_classes, width)
