"""S5: MNIST in the course's steps (configs/s5_step*.yaml, s5.yaml), one change per step.
Layer by layer, with the receptive field after each layer: docs/mnist.md ("Networks")."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from eva_lightning.core.module import ImageClassifier
from eva_lightning.core.blocks import conv_bn
from eva_lightning.core.layers import NormKind, check_dropout, check_virtual_batch_size, norm2d
from eva_lightning.core.errors import EvaError


class MnistNet(nn.Module):
    """The S5 layout: two 3x3 blocks, max-pool + 1x1 transition, 3x3 blocks, GAP, 1x1 conv to the logits.

    Args:
        widths: output channels of the conv blocks: two, the 1x1 transition's, then the rest.
        block: ``block(cin, cout, k=3, padding=0)`` builds one conv block.
        pad_last: pad the last conv (the GAP then averages a larger map at the same receptive field cost).
    """

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...], block: Callable[..., nn.Module],
                 pad_last: bool = False) -> None:
        super().__init__()
        w = widths
        self.block1 = nn.Sequential(block(in_channels, w[0]), block(w[0], w[1]))
        # the 1x1 after the pool cuts the channels: the cheapest place to cut parameters
        self.transition = nn.Sequential(nn.MaxPool2d(2), block(w[1], w[2], k=1))
        last = len(w) - 4
        self.block2 = nn.Sequential(*(block(a, b, padding=int(pad_last and i == last)) for i, (a, b) in enumerate(zip(w[2:], w[3:]))))
        # global average pooling then a 1x1 conv replaces the dense layer
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(w[-1], num_classes, 1), nn.Flatten())

    def forward(self, x):
        return self.head(self.block2(self.transition(self.block1(x))))


def _norm_block(dropout: float, norm: NormKind, virtual_batch_size: int) -> Callable[..., nn.Module]:
    norm_layer = partial(norm2d, norm, virtual_batch_size=check_virtual_batch_size(virtual_batch_size))
    return partial(conv_bn, dropout=check_dropout(dropout), norm=norm_layer)


class SkeletonNet(MnistNet):
    """Steps 1-2: 19,418 parameters (19,674 with batch norm; the course's: 19,734 and 19,942)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, batch_norm: bool = False) -> None:
        # no conv biases: step 2 adds only BN layers, as in the course (+208 parameters, exactly its BN layers')
        block = partial(conv_bn, dropout=None, norm=nn.BatchNorm2d if batch_norm else None)
        super().__init__(in_channels, num_classes, (16, 32, 16, 32, 32), block)


class S5Net(MnistNet):
    """Steps 3-4 (and S6): 7,442 parameters."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.05, norm: NormKind = "bn",
                 virtual_batch_size: int = 32) -> None:
        super().__init__(in_channels, num_classes, (8, 16, 8, 16, 16, 16), _norm_block(dropout, norm, virtual_batch_size))


class FinalNet(MnistNet):
    """Step 5: 9,630 parameters with the default widths (7,562 with ``s5_small``'s)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 widths: tuple[int, ...] = (8, 16, 10, 14, 16, 16, 16), dropout: float = 0.02,
                 norm: NormKind = "bn", virtual_batch_size: int = 32) -> None:
        if len(widths) != 7 or min(widths) < 1:
            raise EvaError(f"model.init_args.widths={list(widths)} is impossible: give 7 positive channel counts (one per conv block)")
        super().__init__(in_channels, num_classes, tuple(widths), _norm_block(dropout, norm, virtual_batch_size), pad_last=True)


class S5Skeleton(ImageClassifier):
    """Steps 1-2: :class:`SkeletonNet`.

    Args:
        batch_norm: step 2's batch norm after every conv.
        **kwargs: :class:`~eva_lightning.core.module.ImageClassifier` arguments.
    """

    gradcam_layer = "net.block2"

    def __init__(self, batch_norm: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = SkeletonNet(self.in_channels, self.num_classes, batch_norm=batch_norm)


class S5Model(ImageClassifier):
    """Steps 3-4: :class:`S5Net` (S6 runs step 5's :class:`S5Final`).

    Args:
        dropout: dropout after every conv block.
        norm: ``bn`` or ``gbn``.
        virtual_batch_size: ghost batch size for ``gbn``.
        **kwargs: :class:`~eva_lightning.core.module.ImageClassifier` arguments.
    """

    gradcam_layer = "net.block2"

    def __init__(self, dropout: float = 0.05, norm: NormKind = "bn", virtual_batch_size: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = S5Net(self.in_channels, self.num_classes, dropout, norm, virtual_batch_size)


class S5Final(ImageClassifier):
    """Step 5 (and ``s5_small``): :class:`FinalNet`.

    Args:
        widths: output channels of the seven conv blocks (w0-w6 of :class:`FinalNet`).
        dropout: dropout after every conv block.
        norm: ``bn`` or ``gbn`` (S6's Ghost BN runs).
        virtual_batch_size: ghost batch size for ``gbn``.
        **kwargs: :class:`~eva_lightning.core.module.ImageClassifier` arguments.
    """

    gradcam_layer = "net.block2"

    def __init__(self, widths: tuple[int, ...] = (8, 16, 10, 14, 16, 16, 16), dropout: float = 0.02,
                 norm: NormKind = "bn", virtual_batch_size: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = FinalNet(self.in_channels, self.num_classes, tuple(widths), dropout, norm, virtual_batch_size)
