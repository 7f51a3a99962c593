"""S10: S9 plus the LR range test and ReduceLROnPlateau.

The ``LRRangeTest`` callback runs Lightning's LR finder at the start of ``fit`` and sets
``model.lr`` from its suggestion; ``schedule: {name: plateau}`` divides the LR when the
validation loss stops improving. Train and test accuracy curves come from the logged
``train/acc`` and ``val/acc`` (TensorBoard, ``CurvesFigure``). Network: S8's ResNet18.
"""

from __future__ import annotations

from eva_lightning.assignments.s8 import S8Model


class S10Model(S8Model):
    """ResNet18 (CIFAR stem); see :class:`~eva_lightning.assignments.s8.S8Model`."""
