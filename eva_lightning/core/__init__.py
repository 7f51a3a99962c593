from eva_lightning.core.layers import GhostBatchNorm, norm2d
from eva_lightning.core.module import ImageClassifier, Schedule

__all__ = ["GhostBatchNorm", "ImageClassifier", "Schedule", "norm2d"]
