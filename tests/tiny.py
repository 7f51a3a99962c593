"""A tiny network for fast CPU tests (importable by subprocess tests through PYTHONPATH)."""

from torch import nn

from eva_lightning.core import ImageClassifier


class TinyNet(ImageClassifier):
    """conv(8) - BN - ReLU - maxpool - conv(num_classes) - GAP."""

    gradcam_layer = "net.0"

    def __init__(self, width: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = nn.Sequential(
            nn.Conv2d(self.in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, self.num_classes, 3, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
