""":class:`RngState`: a resumed run draws the same shuffles as an uninterrupted one."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from eva_lightning.callbacks.hooks import batch_hooks_only_where_used


@batch_hooks_only_where_used
class RngState(Callback):
    """Global RNG states (torch, numpy, Python, CUDA) in the checkpoint, restored on resume (Lightning does not) with
    the callbacks: after the model's init drew from the RNG, before the first batch is drawn."""

    def state_dict(self) -> dict[str, Any]:
        # as tensors and Python scalars, which ``weights_only`` loading accepts
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, state, gauss_py = random.getstate()
        states = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": (version, list(state), gauss_py),
        }
        if torch.cuda.is_available():
            states["torch.cuda"] = torch.cuda.get_rng_state_all()
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" not in state_dict:
            return
        states = state_dict["rng"]
        torch.set_rng_state(states["torch"])
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
        version, state, gauss_py = states["python"]
        random.setstate((version, tuple(state), gauss_py))
        cuda = states.get("torch.cuda", [])
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)  # a checkpoint from another machine keeps this machine's CUDA seeds
