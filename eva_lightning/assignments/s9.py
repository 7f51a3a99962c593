"""S9: the S8 ResNet18 trained with the albumentations pipeline and GradCAM.

Training: PadIfNeeded(40) + RandomCrop(32) (random crop with 4-pixel padding), HorizontalFlip,
CoarseDropout (the old Cutout: one 8x8 hole filled with 0), Normalize, ToTensorV2; validation
and test get Normalize + ToTensorV2 only. Only the config (configs/s9.yaml) differs from S8:
the pipeline and the ``GradCAMGrid`` callback.
"""

from __future__ import annotations

from eva_lightning.assignments.s8 import S8Model


class S9Model(S8Model):
    """ResNet18 (CIFAR stem); see :class:`~eva_lightning.assignments.s8.S8Model`."""
