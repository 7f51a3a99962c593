"""S7: CIFAR-10, C1-C4 blocks, 3 max-pools, a dilated conv, GAP, < 1M parameters, RF >= 45 (docs/cifar.md). The two
widest places (C3, C4) use depthwise-separable convs, about 9x fewer weights than a plain 3x3."""

from __future__ import annotations

from torch import nn

from eva_lightning.core.module import ImageClassifier
from eva_lightning.core.blocks import conv_bn_relu, dws_bn_relu
from eva_lightning.core.layers import check_dropout


class S7Net(nn.Module):
    """744,490 parameters (3x32x32 input, 10 classes); ``dropout`` after every conv block."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        self.c1 = nn.Sequential(conv_bn_relu(in_channels, 32, dropout=dropout), conv_bn_relu(32, 64, dropout=dropout))
        self.t1 = nn.MaxPool2d(2)
        # the dilated conv grows the RF by 4 pixels at 16x16 for the price of a 3x3
        self.c2 = nn.Sequential(conv_bn_relu(64, 128, dropout=dropout), conv_bn_relu(128, 128, dilation=2, dropout=dropout))
        self.t2 = nn.MaxPool2d(2)
        self.c3 = nn.Sequential(conv_bn_relu(128, 256, dropout=dropout), dws_bn_relu(256, 256, dropout=dropout))
        self.t3 = nn.MaxPool2d(2)
        self.c4 = dws_bn_relu(256, 512)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(512, num_classes, 1), nn.Flatten())

    def forward(self, x):
        return self.head(self.c4(self.t3(self.c3(self.t2(self.c2(self.t1(self.c1(x))))))))


class S7Model(ImageClassifier):
    """:class:`S7Net` as a LightningModule.

    Args:
        dropout: dropout after every conv block (0: none; the augmentation regularises).
        **kwargs: :class:`~eva_lightning.core.module.ImageClassifier` arguments.
    """

    gradcam_layer = "net.c3"

    def __init__(self, dropout: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = S7Net(self.in_channels, self.num_classes, check_dropout(dropout))
