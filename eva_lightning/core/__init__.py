from eva_lightning.core.layers import GhostBatchNorm, norm2d
from eva_lightning.core.module import ImageClassifier
from eva_lightning.core.schedules import Schedule, make_optimizer, make_scheduler

__all__ = ["GhostBatchNorm", "ImageClassifier", "Schedule", "make_optimizer", "make_scheduler", "norm2d"]
