"""What keeps a run safe when things go wrong: resume, atomic checkpoints, clear errors.

- :class:`SafeCheckpointIO` writes every checkpoint to a temporary file beside the target, fsyncs
  it and renames it into place, so a crash during the write never leaves a truncated
  ``last.ckpt`` where a good one was; a corrupt or missing checkpoint is an :class:`EvaError`.
- :class:`RngState` puts the global RNG states (torch, numpy, Python, CUDA) into each checkpoint
  and restores them on resume, so a resumed run draws the same shuffles as an uninterrupted one.
- :class:`FiniteLossGuard` stops training at the first NaN/inf loss, before any checkpoint of the
  diverged weights is written, and says where and why.
- :func:`resolve_last` and :func:`check_checkpoint` serve ``--ckpt_path last`` and catch a
  checkpoint of another model before Lightning fails with a ``state_dict`` traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback

from eva_lightning.errors import EvaError

log = logging.getLogger(__name__)

LAST = "last.ckpt"


# --------------------------------------------------------------------------- checkpoint files


class SafeCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.<name>.tmp`` beside the target, fsync, then ``os.replace``.

    Lightning's own ``_atomic_save`` goes through an fsspec transaction whose temporary file
    lives in the system temp directory: when that is another file system (a tmpfs ``/tmp``, a
    mounted drive), the final move is a copy into the real name, which a crash can truncate, and
    nothing is fsynced. A rename within one directory is atomic on POSIX and Windows.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write leaves neither a partial file nor litter

    def load_checkpoint(self, path, map_location: Callable | None = lambda storage, loc: storage, weights_only=None):
        return load_checkpoint_file(path, map_location=map_location, weights_only=weights_only)


def load_checkpoint_file(path, map_location: Any = "cpu", weights_only: bool | None = False, mmap: bool = False) -> dict:
    """``torch.load`` with a missing, truncated or corrupt file turned into an :class:`EvaError`."""
    path = Path(path)
    if not path.is_file():
        raise EvaError(f"checkpoint {path} does not exist: check --ckpt_path (or use --ckpt_path last)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise EvaError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). "
            f"Use another checkpoint; the run directory also holds best-*.ckpt files"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise EvaError(f"{path} is not a Lightning checkpoint (no state_dict): pass a .ckpt written by eva fit")
    return ckpt


def check_checkpoint_class(path, class_path: str | None) -> None:
    """Raise an :class:`EvaError` if ``path`` is unreadable or was saved from another model class.

    LightningCLI replaces the configured model by the class saved in the checkpoint; when the
    config names another class, saying so beats silently evaluating a different model.
    """
    ckpt = load_checkpoint_file(path, mmap=True)
    saved = ckpt.get("hyper_parameters", {}).get("_class_path")
    if saved and class_path and import_dotted(saved) is not import_dotted(class_path):
        raise EvaError(
            f"checkpoint {path} was saved from {saved}, which does not match the configured model {class_path}. "
            "Pass the config the checkpoint was trained with (--config), or another checkpoint"
        )


def import_dotted(class_path: str) -> Any:
    """The class a dotted path names (two spellings of one class compare equal), else the path."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return class_path


def check_checkpoint(path, model: torch.nn.Module) -> None:
    """Raise an :class:`EvaError` unless ``path`` is a readable checkpoint of ``model``'s architecture.

    Reads the file memory-mapped (only the header and tensor shapes are touched), so the later
    full load by Lightning is the only real read.
    """
    ckpt = load_checkpoint_file(path, mmap=True)
    saved = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)}
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(wanted.keys() - saved.keys()), sorted(saved.keys() - wanted.keys())
    reshaped = [f"{k} {saved[k]} vs {wanted[k]}" for k in sorted(wanted.keys() & saved.keys()) if saved[k] != wanted[k]]
    if not (missing or unexpected or reshaped):
        return
    saved_class = ckpt.get("hyper_parameters", {}).get("_class_path", "an unknown model class")
    ours = f"{type(model).__module__}.{type(model).__qualname__}"
    details = []
    if missing:
        details.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        details.append(f"{len(reshaped)} of another shape (e.g. {reshaped[0]})")
    raise EvaError(
        f"checkpoint {path} was saved from {saved_class}, which does not match the configured model {ours}: "
        f"{'; '.join(details)}. Pass the config the checkpoint was trained with (--config), or another checkpoint"
    )


def resolve_last(run_root: Path) -> Path | None:
    """``<run_root>/version_N/checkpoints/last.ckpt`` of the highest N that has one, else None."""
    found = []
    for ckpt in Path(run_root).glob(f"version_*/checkpoints/{LAST}"):
        m = re.fullmatch(r"version_(\d+)", ckpt.parent.parent.name)
        if m:
            found.append((int(m.group(1)), ckpt))
    return max(found)[1] if found else None


# --------------------------------------------------------------------------- callbacks


def _plain_rng_states() -> dict[str, Any]:
    """The global RNG states as tensors and Python scalars, which ``weights_only`` loading accepts."""
    states = _collect_rng_states(include_cuda=torch.cuda.is_available())
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    states["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    version, state, gauss_py = states["python"]
    states["python"] = (version, list(state), gauss_py)
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    states = dict(states)
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    states["numpy"] = (kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss)
    cuda = states.pop("torch.cuda", [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        states["torch.cuda"] = cuda  # a checkpoint from another machine keeps this machine's CUDA seeds
    _set_rng_states(states)


class RngState(Callback):
    """Global RNG states in the checkpoint, restored on resume.

    Lightning restores weights, optimiser, schedulers, loops and callback states, but not the
    RNGs: a resumed run would shuffle the next epoch from the seed's start state instead of where
    the interrupted run was. Restoring happens while Lightning restores callbacks, which is after
    the model was built (its init draws from the RNG) and before the first training batch is
    drawn; in DDP every rank gets rank 0's states (ranks start from the same seed anyway).
    """

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _plain_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            _restore_rng_states(state_dict["rng"])


class FiniteLossGuard(Callback):
    """Stop at the first NaN/inf training loss with where and the likely cause.

    Raising before the next checkpoint means no checkpoint of the diverged weights is written, so
    ``last.ckpt`` stays the last good one. (``EarlyStopping(check_finite=True)`` looks only at an
    epoch-end metric, after ``ModelCheckpoint`` may already have saved NaN weights.) On a GPU
    reading the loss every step would stall the device queue, so the first bad step is recorded
    on the device and read every ``check_every_n_steps`` and always before validation and at the
    end of each epoch (before ``ModelCheckpoint`` saves); on a CPU it is read every step. In DDP
    the decision is shared by all ranks so none is left waiting in a collective.

    Args:
        check_every_n_steps: on accelerators, steps between reads of the device-side record.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._first: dict[str, torch.Tensor] | None = None  # epoch/step/batch/nan of the first bad loss, -1: none

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach()
        if self._first is None or self._first["step"].device != loss.device:
            self._first = {k: torch.full((), -1, dtype=torch.long, device=loss.device) for k in ("epoch", "step", "batch", "nan")}
        new = ~torch.isfinite(loss).all() & (self._first["step"] < 0)
        here = {"epoch": trainer.current_epoch, "step": trainer.global_step, "batch": batch_idx}
        for key, value in here.items():  # python scalars: no host-to-device copy, no sync
            self._first[key] = torch.where(new, value, self._first[key])
        self._first["nan"] = torch.where(new, torch.isnan(loss).any().long(), self._first["nan"])
        if loss.device.type == "cpu" or (batch_idx + 1) % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._first is None:
            return
        first = {k: int(v) for k, v in self._first.items()}  # the one device sync
        if not trainer.strategy.reduce_boolean_decision(first["step"] >= 0, all=False):
            return
        if first["step"] >= 0:
            what = "NaN" if first["nan"] else "inf"
            where = f"at epoch {first['epoch']}, step {first['step']} (batch {first['batch']})"
        else:
            what, where = "NaN/inf", f"on another process by epoch {trainer.current_epoch}"
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        lr = f" with lr={lrs[0]:.3g}" if lrs else ""
        kept = [Path(cb.last_model_path) for cb in trainer.checkpoint_callbacks if getattr(cb, "last_model_path", "")]
        kept_msg = f"The last good checkpoint is kept: {kept[0]}." if kept else "No checkpoint was written yet."
        raise EvaError(
            f"the training loss became {what} {where}{lr}. The likely cause is a learning rate that is too "
            f"high: lower model.init_args.lr / the optimiser's lr (eva lr_find suggests one), or the schedule's "
            f"peak. {kept_msg}"
        )
