"""CIFAR-10 fast (issue #34): airbench94's network (Keller Jordan, arXiv 2404.00498) in the project's parts: a frozen
2x2 patch-whitening conv -> GELU -> three conv groups 64/256/256 (conv - MaxPool(2) - BN - GELU - conv - BN - GELU) ->
MaxPool(3) -> Linear x 1/9. Its training recipe (whitening fit, lookahead, TTA, schedule) is configs/cifar10_fast.yaml."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from eva_lightning.core.errors import EvaError
from eva_lightning.core.layers import PatchWhitening
from eva_lightning.core.module import ImageClassifier


def conv3x3_dirac(cin: int, cout: int) -> nn.Conv2d:
    """3x3 'same' conv without bias; its first ``min(cin, cout)`` filters start as the identity (airbench's init:
    each group starts near a pass-through of its input)."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


def batch_norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm with a fixed scale of 1 (only its shift trains) and eps 1e-12, as airbench94."""
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=momentum)
    bn.weight.requires_grad_(False)
    return bn


class ConvGroup(nn.Sequential):
    """conv - MaxPool(2) - BN - GELU - conv - BN - GELU (pooling before the norm: 4x less to normalise)."""

    def __init__(self, cin: int, cout: int, bn_momentum: float) -> None:
        super().__init__(conv3x3_dirac(cin, cout), nn.MaxPool2d(2), batch_norm(cout, bn_momentum), nn.GELU(),
                         conv3x3_dirac(cout, cout), batch_norm(cout, bn_momentum), nn.GELU())


class AirbenchNet(nn.Module):
    """airbench94's layout: 1,972,792 parameters with widths 64/256/256 (1,440 frozen: the 288 whitening filters and
    the BatchNorm scales); 3x32x32 -> 24x31x31 -> 64x15x15 -> 256x7x7 -> 256x3x3 -> 256 -> logits."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths: Sequence[int] = (64, 256, 256),
                 whiten_kernel: int = 2, whiten_eps: float = 5e-4, bn_momentum: float = 0.4,
                 logit_scale: float = 1 / 9) -> None:
        super().__init__()
        self.whiten = PatchWhitening(in_channels, whiten_kernel, whiten_eps)
        self.act = nn.GELU()
        cins = [self.whiten.out_channels, *widths[:-1]]
        self.groups = nn.Sequential(*(ConvGroup(cin, cout, bn_momentum) for cin, cout in zip(cins, widths)))
        self.pool = nn.MaxPool2d(3)
        self.fc = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.groups(self.act(self.whiten(x))))
        return self.fc(torch.flatten(x, 1)) * self.logit_scale


class Cifar10FastModel(ImageClassifier):
    """:class:`AirbenchNet` as a LightningModule.

    Args:
        widths: channels of the three conv groups (airbench94: 64, 256, 256).
        whiten_kernel: side of the whitening patches (2: 2·3·4 = 24 filters).
        whiten_eps: added to each eigenvalue before the whitening scale ``1/sqrt(λ + eps)``.
        bn_momentum: torch's BatchNorm momentum (airbench's 0.6 in its convention, 1 - 0.6 = 0.4 in torch's).
        logit_scale: factor on the logits (airbench94: 1/9).
        **kwargs: :class:`~eva_lightning.core.module.ImageClassifier` arguments.
    """

    gradcam_layer = "net.groups.2"

    def __init__(self, widths: list[int] = [64, 256, 256], whiten_kernel: int = 2, whiten_eps: float = 5e-4,
                 bn_momentum: float = 0.4, logit_scale: float = 1 / 9, **kwargs) -> None:
        super().__init__(**kwargs)
        if len(widths) < 1 or min(widths) < 1:
            raise EvaError(f"model.init_args.widths={widths} is impossible: give one width >= 1 per conv group")
        if whiten_kernel < 1 or not whiten_eps > 0:
            raise EvaError(f"model.init_args.whiten_kernel={whiten_kernel}, whiten_eps={whiten_eps}: the kernel must "
                           "be at least 1 and eps > 0 (airbench94: 2 and 5e-4)")
        if not 0 <= bn_momentum <= 1 or not logit_scale > 0:
            raise EvaError(f"model.init_args.bn_momentum={bn_momentum}, logit_scale={logit_scale}: the momentum must be "
                           "in [0, 1] and the scale > 0 (airbench94: 0.4 and 1/9)")
        self.net = AirbenchNet(self.in_channels, self.num_classes, widths, whiten_kernel, whiten_eps, bn_momentum,
                               logit_scale)

    def on_fit_start(self) -> None:
        # after the callbacks' on_fit_start: WhiteningInit has fitted the layer by now, or a checkpoint held it
        if not bool(self.net.whiten.fitted):
            raise EvaError("net.whiten was not fitted to the data: add the callback "
                           "{class_path: eva_lightning.callbacks.WhiteningInit} to trainer.callbacks "
                           "(configs/cifar10_fast.yaml has it); without it the frozen first layer stays random")
