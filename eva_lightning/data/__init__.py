from eva_lightning.data.datamodule import VisionDataModule
from eva_lightning.data.transforms import build_pipeline, build_transform

__all__ = ["VisionDataModule", "build_pipeline", "build_transform"]
