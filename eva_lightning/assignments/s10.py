"""Old name only: configs/s10.yaml trains :class:`~eva_lightning.assignments.s8.S8Model` with S10's schedule."""

# lightning_logs/reference/s10/config.yaml and checkpoints trained before the rename name this class
from eva_lightning.assignments.s8 import S8Model as S10Model  # noqa: F401
