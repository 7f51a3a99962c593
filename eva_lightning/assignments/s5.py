"""S5: MNIST in four steps, each with a Target, a Result and an Analysis (see configs/s5_step*.yaml).

    step 1  SkeletonNet(batch_norm=False)  the skeleton: conv blocks, one max-pool, GAP, no dense layer
    step 2  SkeletonNet(batch_norm=True)   + batch norm after every conv
    step 3  S5Net                          under 8k parameters: 1x1 transition, narrow blocks, dropout
    step 4  S5Net                          + rotation ±7° and a one-cycle LR (only the config changes)

S6 trains the step-4 network with L1/L2 and Ghost BN: ``S5Model(norm="gbn")``.
Shapes are written as channels x size, with the receptive field (RF) after each layer.
"""

from __future__ import annotations

from torch import nn

from eva_lightning.core import ImageClassifier
from eva_lightning.core.layers import NormKind, check_dropout, norm2d
from eva_lightning.errors import EvaError


class SkeletonNet(nn.Module):
    """Steps 1-2: 19,546 parameters (19,674 with batch norm).

    1x28 -> conv 16x26 (RF 3) -> conv 32x24 (5) -> maxpool 32x12 (6) -> 1x1 16x12 (6)
    -> conv 32x10 (10) -> conv 32x8 (14) -> GAP 32x1 -> 1x1 10x1 -> logits
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, batch_norm: bool = False) -> None:
        super().__init__()

        def block(cin: int, cout: int, k: int = 3) -> nn.Sequential:
            if batch_norm:  # BN carries the shift, so the conv needs no bias
                return nn.Sequential(nn.Conv2d(cin, cout, k, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
            return nn.Sequential(nn.Conv2d(cin, cout, k), nn.ReLU())

        self.block1 = nn.Sequential(block(in_channels, 16), block(16, 32))
        self.transition = nn.Sequential(nn.MaxPool2d(2), block(32, 16, k=1))
        self.block2 = nn.Sequential(block(16, 32), block(32, 32))
        # global average pooling then a 1x1 conv replaces the dense layer
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, num_classes, 1), nn.Flatten())

    def forward(self, x):
        return self.head(self.block2(self.transition(self.block1(x))))


class S5Net(nn.Module):
    """Steps 3-4 (and S6): 7,442 parameters.

    1x28 -> conv 8x26 (RF 3) -> conv 16x24 (5) -> maxpool 16x12 (6) -> 1x1 8x12 (6)
    -> conv 16x10 (10) -> conv 16x8 (14) -> conv 16x6 (18) -> GAP 16x1 -> 1x1 10x1 -> logits

    Args:
        in_channels: input channels.
        num_classes: outputs.
        dropout: dropout after every conv block (not the head).
        norm: ``bn`` or ``gbn`` (Ghost BN, S6).
        virtual_batch_size: ghost batch size when ``norm="gbn"``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        dropout: float = 0.05,
        norm: NormKind = "bn",
        virtual_batch_size: int = 32,
    ) -> None:
        super().__init__()

        def block(cin: int, cout: int, k: int = 3) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, k, bias=False),
                norm2d(norm, cout, virtual_batch_size),
                nn.ReLU(),
                nn.Dropout(dropout),
            )

        self.block1 = nn.Sequential(block(in_channels, 8), block(8, 16))
        # the 1x1 halves the channels after the pool: the cheapest place to cut parameters
        self.transition = nn.Sequential(nn.MaxPool2d(2), block(16, 8, k=1))
        self.block2 = nn.Sequential(block(8, 16), block(16, 16), block(16, 16))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, num_classes, 1), nn.Flatten())

    def forward(self, x):
        return self.head(self.block2(self.transition(self.block1(x))))


class S5Skeleton(ImageClassifier):
    """Steps 1-2: :class:`SkeletonNet`.

    Args:
        batch_norm: step 2's batch norm after every conv.
        **kwargs: :class:`~eva_lightning.core.ImageClassifier` arguments.
    """

    gradcam_layer = "net.block2"

    def __init__(self, batch_norm: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = SkeletonNet(self.in_channels, self.num_classes, batch_norm=batch_norm)


class S5Model(ImageClassifier):
    """Steps 3-4 and S6: :class:`S5Net`.

    Args:
        dropout: dropout after every conv block.
        norm: ``bn`` or ``gbn``.
        virtual_batch_size: ghost batch size for ``gbn``.
        **kwargs: :class:`~eva_lightning.core.ImageClassifier` arguments.
    """

    gradcam_layer = "net.block2"

    def __init__(self, dropout: float = 0.05, norm: NormKind = "bn", virtual_batch_size: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        if virtual_batch_size < 1:
            raise EvaError(
                f"model.init_args.virtual_batch_size={virtual_batch_size} is impossible: use at least 1 "
                "(samples per ghost batch, e.g. 32)"
            )
        self.net = S5Net(self.in_channels, self.num_classes, check_dropout(dropout), norm, virtual_batch_size)
