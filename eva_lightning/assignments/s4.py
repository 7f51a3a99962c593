"""S4: MNIST without a dense layer, at most two max-pools, under 10k (here 6.6k) parameters, >= 99.4%.

Eight convolutions (six 3x3, two 1x1) with batch norm and ReLU, two max-pools, global average
pooling and a 1x1 conv as the classifier. Shapes as channels x size, receptive field (RF) after each:

    1x28 -> conv 8x26 (RF 3) -> conv 16x24 (5) -> maxpool 16x12 (6) -> 1x1 8x12 (6)
    -> conv 12x10 (10) -> conv 16x8 (14) -> maxpool 16x4 (16) -> conv 16x4 (24, padded)
    -> GAP 16x1 -> 1x1 10x1 -> logits
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from eva_lightning.core import ImageClassifier
from eva_lightning.core.layers import check_dropout
from eva_lightning.errors import EvaError


def conv_bn(cin: int, cout: int, k: int = 3, padding: int = 0, dropout: float | None = 0.0,
            norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d) -> nn.Sequential:
    """conv (no bias: the norm shifts) - norm - ReLU - dropout; ``norm`` / ``dropout`` None leaves that layer out."""
    layers = [nn.Conv2d(cin, cout, k, padding=padding, bias=False), *([norm(cout)] if norm else []), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout is not None else []))


class S4Net(nn.Module):
    """6,570 parameters.

    Args:
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


class LiteralNet(nn.Module):
    """The course's wording taken literally: "6 convolution layers with kernels 10, 10, 20, 20, 30, 30".

    With 3x3 kernels the six convs alone hold 19,890 weights (9·(1·10 + 10·10 + 10·20 + 20·20 + 20·30
    + 30·30)), twice the assignment's 10k limit, before BN and the classifier: configs/s4_literal.yaml is
    summarised (``eva summary``), not trained. S4 keeps the parameter limit and not this wording.

    1x28 -> conv w0x26 -> conv w1x24 -> maxpool w1x12 -> conv w2x10 -> conv w3x8 -> maxpool w3x4
    -> conv w4x4 (padded) -> conv w5x4 (padded) -> GAP w5x1 -> 1x1 10x1 -> logits

    Args:
        widths: output channels of the six 3x3 convs.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (10, 10, 20, 20, 30, 30)) -> None:
        super().__init__()
        if len(widths) != 6 or min(widths) < 1:
            raise EvaError(f"model.init_args.widths={list(widths)} is impossible: give 6 positive channel counts (one per conv)")
        w = widths
        self.block1 = nn.Sequential(conv_bn(in_channels, w[0]), conv_bn(w[0], w[1]))
        self.block2 = nn.Sequential(nn.MaxPool2d(2), conv_bn(w[1], w[2]), conv_bn(w[2], w[3]))
        self.block3 = nn.Sequential(nn.MaxPool2d(2), conv_bn(w[3], w[4], padding=1), conv_bn(w[4], w[5], padding=1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(w[5], num_classes, 1), nn.Flatten())

    def forward(self, x):
        return self.head(self.block3(self.block2(self.block1(x))))


class S4Literal(ImageClassifier):
    """:class:`LiteralNet` as a LightningModule (for ``eva summary``).

    Args:
        widths: output channels of the six 3x3 convs.
        **kwargs: :class:`~eva_lightning.core.ImageClassifier` arguments.
    """

    gradcam_layer = "net.block3"

    def __init__(self, widths: tuple[int, ...] = (10, 10, 20, 20, 30, 30), **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = LiteralNet(self.in_channels, self.num_classes, tuple(widths))
