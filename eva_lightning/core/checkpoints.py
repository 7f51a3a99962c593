"""Checkpoint files: written atomically, read as data (unpickling can run code), checked before Lightning loads them."""

from __future__ import annotations

import importlib
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from eva_lightning.core.disk import KEEPS_LAST, RESUME_FIT, writing
from eva_lightning.core.errors import EvaError

LAST = "last.ckpt"
PROJECT = "eva_lightning."
TRUST_HINT = "if you trust whoever made the file, pass --trust_checkpoint true (it may then run code)"


class SafeCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.<name>.tmp`` beside the target, fsync, ``os.replace`` (Lightning's temporary file in the
    system temp dir may be copied, unfsynced); loads as data (``weights_only=None`` means ``True``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with writing(path, tensor_bytes(checkpoint), then=KEEPS_LAST if path.exists() else RESUME_FIT):
            try:
                with open(tmp, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)  # a failed write leaves neither a partial file nor litter

    def load_checkpoint(self, path, map_location: Callable | None = lambda storage, loc: storage, weights_only=None):
        return load_checkpoint_file(path, map_location=map_location, trusted=weights_only is False)


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a checkpoint dict: about the size of its file."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return sum(tensor_bytes(v) for v in items)


def trusts_checkpoint(cfg: Any) -> bool:
    """Whether the user opted in to unpickling a checkpoint in full (``--trust_checkpoint true``)."""
    return bool(cfg.get("trust_checkpoint")) or cfg.get("weights_only") is False


def saved_model_config(path, model: Any, trusted: bool = False) -> dict | None:
    """The ``model`` config LightningCLI merges from a checkpoint, its class paths checked before any import;
    ``None`` if the file saved no hyper-parameters."""
    hparams = dict(load_checkpoint_file(path, trusted=trusted, mmap=True).get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    if not hparams:
        return None
    allowed = set(class_paths(model.as_dict())) if model is not None else set()  # what the user's config names
    check_checkpoint_class(path, hparams.get("_class_path"), getattr(model, "class_path", None), allowed)
    check_class_paths(path, hparams, allowed, trusted=trusted)
    if "_class_path" in hparams:
        return {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
    return hparams


def load_checkpoint_file(path, map_location: Any = "cpu", trusted: bool = False, mmap: bool = False) -> dict:
    """Read a Lightning checkpoint as data (``weights_only=True``) unless ``trusted``; any failure is an EvaError."""
    path = Path(path)
    if not path.is_file():
        raise EvaError(f"checkpoint {path} does not exist: check --ckpt_path (or use --ckpt_path last)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=not trusted, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if not trusted and "weights_only" in str(exc).lower().replace(" ", "_"):
            raise EvaError(_refusal(path, str(exc))) from None
        raise EvaError(_corrupt(path, exc)) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise EvaError(_corrupt(path, exc)) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise EvaError(f"{path} is not a Lightning checkpoint (no state_dict): pass a .ckpt written by eva fit")
    return ckpt


def _corrupt(path: Path, exc: BaseException) -> str:
    reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "mmap can only be used" in reason or "zip archive" in reason:  # torch's words for a file not in its format
        reason = "not in torch's checkpoint format"
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p.name != path.name) if path.parent.is_dir() else []
    if others:
        fix = f"use another checkpoint from {path.parent}: {', '.join(others[:3])}{' …' if len(others) > 3 else ''}"
    elif path.name == LAST:
        fix = "no other checkpoint is in that folder: train again without --ckpt_path"
    else:
        fix = "pass a .ckpt written by eva fit (e.g. a run's checkpoints/last.ckpt)"
    return f"checkpoint {path} is truncated or corrupt ({reason[:160]}): {fix}"


def _refusal(path: Path, message: str) -> str:
    """One line from torch's weights-only error: which object the file wanted, and what to do."""
    found = re.search(r"GLOBAL ([\w.]+)", message)  # torch: "Unsupported global: GLOBAL x" or "unsupported GLOBAL x"
    what = f"the object {found.group(1)}" if found else "something other than tensors and plain values"
    return (f"checkpoint {path} was refused: loading it needs {what}, which is not a tensor, a plain value "
            "or an eva_lightning type, and a checkpoint that unpickles objects can run code on this machine; "
            f"{TRUST_HINT}")


def class_paths(value: Any) -> Iterator[str]:
    """Every class path a checkpoint's hyper-parameters name (``_class_path`` / ``class_path`` keys)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        if key in ("_class_path", "class_path") and isinstance(item, str):
            yield item
        else:
            yield from class_paths(item)


def check_class_paths(path, hparams: dict, allowed: set[str], trusted: bool = False) -> None:
    """Refuse a checkpoint whose hyper-parameters name a class outside this project and ``allowed``."""
    # as strings, before jsonargparse imports them: importing runs code, so a checkpoint must not choose it
    if trusted:
        return
    for name in class_paths(hparams):
        if not (name.startswith(PROJECT) or name in allowed):
            raise EvaError(f"checkpoint {path} names the class '{name}', which is neither an eva_lightning class nor "
                           "one your config names, so eva will not import it; pass the config the checkpoint was "
                           f"trained with (--config), or {TRUST_HINT}")


def import_dotted(class_path: str) -> Any:
    """The class a dotted path names (two spellings of one class compare equal), else the path."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return class_path


def check_checkpoint_class(path, saved: str | None, configured: str | None, allowed: set[str]) -> None:
    """Raise an :class:`EvaError` if the checkpoint's model class is not the configured one (LightningCLI would
    silently evaluate the saved class); a saved path is imported to compare only if it is ours or ``allowed``."""
    if not saved or not configured or saved == configured:
        return
    if (saved.startswith(PROJECT) or saved in allowed) and import_dotted(saved) is import_dotted(configured):
        return
    raise _mismatch(path, saved, configured)


def _mismatch(path, saved: str, configured: str, details: str = "") -> EvaError:
    return EvaError(f"checkpoint {path} was saved from {saved}, which does not match the configured model {configured}"
                    f"{details}. Pass the config the checkpoint was trained with (--config), or another checkpoint")


def check_checkpoint(path, model: torch.nn.Module, trusted: bool = False) -> None:
    """Raise an :class:`EvaError` unless ``path`` is a readable checkpoint of ``model``'s architecture."""
    # memory-mapped: only the header and shapes are touched, Lightning's later load is the only real read
    ckpt = load_checkpoint_file(path, trusted=trusted, mmap=True)
    saved = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)}
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(wanted.keys() - saved.keys()), sorted(saved.keys() - wanted.keys())
    reshaped = [f"{k} {saved[k]} vs {wanted[k]}" for k in sorted(wanted.keys() & saved.keys()) if saved[k] != wanted[k]]
    if not (missing or unexpected or reshaped):
        return
    saved_class = ckpt.get("hyper_parameters", {}).get("_class_path", "an unknown model class")
    ours = f"{type(model).__module__}.{type(model).__qualname__}"
    found = ((missing, "weights missing"), (unexpected, "unexpected"), (reshaped, "of another shape"))
    details = "; ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in found if keys)
    raise _mismatch(path, saved_class, ours, f": {details}")

