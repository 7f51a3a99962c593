from eva_lightning.core.module import ImageClassifier, Schedule

__all__ = ["ImageClassifier", "Schedule"]
