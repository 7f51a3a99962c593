"""The training loader that a mid-epoch checkpoint (a preempted run, callbacks/preemption.py) can continue exactly."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, RandomSampler


class ResumableShuffle(RandomSampler):
    """RandomSampler's shuffle, the same order from the same torch RNG state, that can start an epoch part-way."""

    def __init__(self, data_source) -> None:
        super().__init__(data_source)
        self.order: list[int] | None = None  # this epoch's order
        # (order, start, rng) from ResumableLoader.load_state_dict: the next epoch is order[start:], torch's RNG at rng
        self.resume: tuple[list[int], int, torch.Tensor] | None = None

    def __iter__(self) -> Iterator[int]:
        if self.resume is None:
            self.order = list(super().__iter__())  # draws its seed as RandomSampler does, when the epoch starts
            yield from self.order
            return
        self.order, start, rng = self.resume
        self.resume = None
        # the DataLoader's new iterator drew its base seed from torch's RNG, which the cut run did at the epoch's
        # start: back to the checkpoint's state, so the next batch's augmentation and dropout draw what they drew
        torch.set_rng_state(rng)
        yield from self.order[start:]


class ResumableLoader(DataLoader):
    """A DataLoader whose place in the epoch goes into a checkpoint saved inside :meth:`keep_position` (Lightning saves
    the state of a loader that has ``state_dict``/``load_state_dict`` and gives it back on resume)."""

    _batches = 0  # batches of the current epoch handed out
    _keep = False

    def __iter__(self) -> Iterator[Any]:
        # counted here, not in the sampler: workers read indices ahead of the batches the trainer took
        self._batches = getattr(self, "_start", 0)
        self._start = 0
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    @contextmanager
    def keep_position(self) -> Iterator[None]:
        """Checkpoints saved meanwhile record the epoch's order, the batches done and torch's RNG state."""
        self._keep = True
        try:
            yield
        finally:
            self._keep = False

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not self._keep or not isinstance(sampler, ResumableShuffle) or sampler.order is None:
            return {}  # an epoch-end checkpoint: the next epoch starts as an uncut run's would
        return {"batches": self._batches, "order": torch.tensor(sampler.order, dtype=torch.int64),
                "rng": torch.get_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "order" in state_dict and isinstance(self.sampler, ResumableShuffle):
            batches = int(state_dict["batches"])
            self.sampler.resume = (state_dict["order"].tolist(), batches * self.batch_size, state_dict["rng"])
            self._start = batches
