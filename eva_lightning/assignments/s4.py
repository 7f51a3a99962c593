"""S4's wording taken literally (configs/s4_literal.yaml); the S4 run itself (configs/s4.yaml) trains S5's FinalNet."""

from __future__ import annotations

from torch import nn

from eva_lightning.core.module import ImageClassifier
from eva_lightning.core.blocks import conv_bn
from eva_lightning.core.errors import EvaError


class LiteralNet(nn.Module):
    """The course's "6 convolution layers with kernels 10, 10, 20, 20, 30, 30" (docs/mnist.md, "Networks"): 19,890
    weights in the convs alone, twice S4's 10k limit, so summarised (``eva summary``), not trained."""

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
        **kwargs: :class:`~eva_lightning.core.module.ImageClassifier` arguments.
    """

    gradcam_layer = "net.block3"

    def __init__(self, widths: tuple[int, ...] = (10, 10, 20, 20, 30, 30), **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = LiteralNet(self.in_channels, self.num_classes, tuple(widths))
