"""Old name only: configs/s9.yaml trains :class:`~eva_lightning.assignments.s8.S8Model` with S9's pipeline."""

# lightning_logs/reference/s9/config.yaml and checkpoints trained before the rename name this class
from eva_lightning.assignments.s8 import S8Model as S9Model  # noqa: F401
