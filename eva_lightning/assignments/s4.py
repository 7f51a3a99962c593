"""S4: MNIST without a dense layer, at most two max-pools, under 10k (here 6.6k) parameters, >= 99.4%.

Eight convolutions (six 3x3, two 1x1) with batch norm and ReLU, two max-pools, global average
pooling and a 1x1 conv as the classifier. Shapes as channels x size, receptive field (RF) after each:

    1x28 -> conv 8x26 (RF 3) -> conv 16x24 (5) -> maxpool 16x12 (6) -> 1x1 8x12 (6)
    -> conv 12x10 (10) -> conv 16x8 (14) -> maxpool 16x4 (16) -> conv 16x4 (24, padded)
    -> GAP 16x1 -> 1x1 10x1 -> logits
"""

from __future__ import annotations

from torch import nn

from eva_lightning.core import ImageClassifier
from eva_lightning.core.layers import check_dropout


def conv_bn(cin: int, cout: int, k: int = 3, padding: int = 0, dropout: float = 0.0) -> nn.Sequential:
    """conv (no bias: BN shifts) - BN - ReLU - dropout."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout(dropout))


class S4Net(nn.Module):
    """6,570 parameters.

    Args:
        in_channels: input channels.
        num_classes: outputs.
        dropout: dropout after every conv block.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.05) -> None:
        super().__init__()
        # unpadded while the image is large: MNIST's border is empty, and 24x24 maps cost 27% less than 28x28
        self.block1 = nn.Sequential(conv_bn(in_channels, 8, dropout=dropout), conv_bn(8, 16, dropout=dropout))
        self.transition1 = nn.Sequential(nn.MaxPool2d(2), conv_bn(16, 8, k=1, dropout=dropout))
        self.block2 = nn.Sequential(conv_bn(8, 12, dropout=dropout), conv_bn(12, 16, dropout=dropout))
        # padded: unpadded, a 4x4 map would shrink to 2x2 and the GAP would average only 4 positions
        self.block3 = nn.Sequential(nn.MaxPool2d(2), conv_bn(16, 16, padding=1, dropout=dropout))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, num_classes, 1), nn.Flatten())

    def forward(self, x):
        return self.head(self.block3(self.block2(self.transition1(self.block1(x)))))


class S4Model(ImageClassifier):
    """:class:`S4Net` as a LightningModule.

    Args:
        dropout: dropout after every conv block.
        **kwargs: :class:`~eva_lightning.core.ImageClassifier` arguments.
    """

    gradcam_layer = "net.block2"

    def __init__(self, dropout: float = 0.05, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = S4Net(self.in_channels, self.num_classes, check_dropout(dropout))
