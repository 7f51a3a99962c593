"""Kept for imports that name it here: the decorator lives in :mod:`eva_lightning.core.hooks` (runs/ uses it too,
and runs/ sits below callbacks/)."""

from eva_lightning.core.hooks import BATCH_HOOKS, TRAIN_BATCH_HOOKS, batch_hooks_only_where_used

__all__ = ["BATCH_HOOKS", "TRAIN_BATCH_HOOKS", "batch_hooks_only_where_used"]
