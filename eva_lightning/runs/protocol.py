"""The evaluation protocol, decided once: which split validation runs on, which tag is a run's result of record,
whether an epoch or a checkpoint may be chosen, whether fit ends by testing. The CLI asks it of the live run
(:meth:`Protocol.of_datamodule`), runs/ of a run folder's ``config.yaml`` (:meth:`Protocol.of_config`).

With ``data.val_split: 0`` validation runs on the test split: its final ``val/acc`` is the result of record and nothing
is chosen on it -- unless the model tests with test-time augmentation (``model.init_args.tta``), which the validation
epochs leave out: then fit ends by testing the final weights with it (``test/acc``, the record). With a held-out split
only that split may have a best epoch or checkpoint, and fit ends by testing the final weights (``test/acc``), unless
``--test_after_fit false`` (a tuning run, which never reads the test split).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any


def _split(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _get(config: Any, *keys: str) -> Any:
    """``config[k1][k2]...``, None where a level is missing or no mapping."""
    for key in keys:
        config = config.get(key) if hasattr(config, "get") else None
    return config


@dataclass(frozen=True)
class Protocol:
    """How a run is evaluated.

    Args:
        val_split: ``data.val_split``; 0 means validation runs on the test split.
        test_after_fit: ``--test_after_fit``; with a held-out split, whether fit ends by testing the final weights.
        tta: the model's ``tta``: other than ``none``, a test differs from the last validation pass, so a run
            validating on the test split also ends by testing.
    """

    val_split: float = 0.0
    test_after_fit: bool = True
    tta: str = "none"

    @classmethod
    def of_datamodule(cls, datamodule: Any, test_after_fit: bool = True, tta: str = "none") -> "Protocol":
        """The protocol of a live run, from its data module's ``val_split`` (and its model's ``tta``)."""
        return cls(_split(getattr(datamodule, "val_split", 0.0)), test_after_fit, tta or "none")

    @classmethod
    def of_config(cls, config: Any) -> "Protocol":
        """The protocol a resolved configuration records (``config.yaml`` as a dict); defaults for what it lacks."""
        return cls(_split(_get(config, "data", "val_split")), _get(config, "test_after_fit") is not False,
                   _get(config, "model", "init_args", "tta") or "none")

    @property
    def held_out(self) -> bool:
        """Whether validation runs on a split of the training set rather than on the test split."""
        return self.val_split > 0

    @property
    def tests_after_fit(self) -> bool:
        """Whether fit ends by testing its final weights (the result of record of a held-out run, or of one whose
        test adds test-time augmentation to what validation saw)."""
        return self.test_after_fit and (self.held_out or self.tta != "none")

    @property
    def keeps_best_checkpoint(self) -> bool:
        """Whether a best-by-validation checkpoint may be kept (and loaded as ``--ckpt_path best``)."""
        return self.held_out

    def may_choose_best(self, tag: str) -> bool:
        """Whether ``tag`` may have a best epoch: only the held-out split's ``val/*`` (any other best is chosen on the
        reported numbers)."""
        return self.held_out and tag.startswith("val/")

    def tag_of_record(self, logged: Collection[str] = ()) -> str:
        """The tag holding the run's test accuracy: ``test/acc`` when the run tested its final weights or held out a
        validation split (whose ``val/acc`` is then no test accuracy), else ``val/acc`` (the test split)."""
        return "test/acc" if "test/acc" in logged or self.held_out else "val/acc"
