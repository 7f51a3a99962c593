"""Unused per-batch callback hooks set to None: Lightning calls every hook, overridden or not, but skips
one that is not callable (``trainer/call.py``; the cost is in docs/speed.md)."""

from __future__ import annotations

from typing import TypeVar

import lightning as L

#: hooks Lightning calls once per training step, none returning a value
TRAIN_BATCH_HOOKS = (
    "on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad",
)
#: and once per validation/test/predict batch
BATCH_HOOKS = (
    *TRAIN_BATCH_HOOKS, "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
)

T = TypeVar("T", bound=type)


def batch_hooks_only_where_used(cls: T) -> T:
    """Class decorator: a Callback's inherited no-op batch hooks become None (its own cannot call ``super()``)."""
    for name in BATCH_HOOKS:
        if getattr(cls, name) is getattr(L.Callback, name):
            setattr(cls, name, None)
    return cls
