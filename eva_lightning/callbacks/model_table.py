"""The layer table ``eva fit`` prints at the start: Lightning's model summary without metric rows or zero FLOPs."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torchmetrics
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from eva_lightning.callbacks.hooks import batch_hooks_only_where_used

#: Lightning's summary logger: the table prints where (and as plainly as) Lightning's own would.
log = logging.getLogger("lightning.pytorch.callbacks.model_summary")

@batch_hooks_only_where_used
class LayerTable(ModelSummary):
    """Lightning's model summary listing layers only: no metric objects (torchmetrics), no all-zero FLOPs.

    Lightning counts FLOPs only for a module with an ``example_input_array``: otherwise every row
    and the total read 0, so the column is left out when nothing was counted.

    Args:
        max_depth: nesting depth of the layers listed (Lightning's default 1: the module's children).
    """

    def __init__(self, max_depth: int = 1) -> None:
        super().__init__(max_depth=max_depth)
        self._metric_names: set[str] = set()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._metric_names = {n for n, m in pl_module.named_modules() if n and isinstance(m, torchmetrics.Metric)}
        super().on_fit_start(trainer, pl_module)

    def summarize(self, summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int = 0, **kwargs: Any) -> None:
        """Log the layer table (the base class's static method, called through the instance)."""
        columns = dict(summary_data)
        keep = [i for i, name in enumerate(columns.get("Name", [])) if name not in self._metric_names]
        drop = {" "}  # the row index: renumbered below
        if total_flops == 0:
            drop.add("FLOPs")
        if len(set(columns.get("Mode", []))) <= 1:
            drop.add("Mode")  # all "train" at fit start: says nothing
        cols = [("", [str(n) for n in range(len(keep))])]
        cols += [(head, [values[i] for i in keep]) for head, values in summary_data if head not in drop]
        widths = [max([len(head), *(len(v) for v in values)]) for head, values in cols]
        rows = [" | ".join(f"{head:<{w}}" for (head, _), w in zip(cols, widths))]
        rows.append("-" * len(rows[0]))
        rows += [" | ".join(f"{values[i]:<{w}}" for (_, values), w in zip(cols, widths)) for i in range(len(keep))]
        rows.append("-" * len(rows[0]))
        totals = [
            (get_human_readable_count(trainable_parameters), "Trainable params"),
            (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
            (get_human_readable_count(total_parameters), "Total params"),
            (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
        ]
        if total_flops:
            totals.append((get_human_readable_count(total_flops), "Total FLOPs"))
        rows += [f"{value:<10}{label}" for value, label in totals]
        log.info("\n%s", "\n".join(rows))
