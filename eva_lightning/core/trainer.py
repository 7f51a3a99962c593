"""EvaTrainer: Lightning's Trainer whose signature says which numbers are valid, which refuses
accelerator and precision settings this machine cannot run, and whose ``precision: auto`` picks the
fastest one it can."""

from __future__ import annotations

import functools
import logging
import os
import traceback
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Literal, get_type_hints

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import AcceleratorRegistry, CUDAAccelerator, MPSAccelerator
from lightning.pytorch.utilities.exceptions import SIGTERMException

from eva_lightning.core.disk import RESUME_FIT, disk_full_message, is_disk_full
from eva_lightning.core.errors import EvaError, Preempted, first_cause

#: a number of batches (int) or a fraction of them (float in [0, 1]). Plain ``int`` first, so ``1`` is one
#: batch and YAML's ``1.0`` all of them (jsonargparse's restricted ints would turn ``1.0`` into ``1``);
#: Lightning refuses a negative count itself.
Batches = int | ClosedUnitInterval
#: Lightning's precision values, and ``auto`` (:func:`auto_precision`)
Precision = Literal["auto"] | get_type_hints(Trainer.__init__)["precision"]

log = logging.getLogger(__name__)


def _in_one_line(method):
    """``method`` (Trainer's fit/validate/test) inside :meth:`EvaTrainer._failures_in_one_line`; Trainer's signature and
    docstring kept, which LightningCLI reads for the subcommand's options."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._failures_in_one_line(method.__name__):
            return method(self, *args, **kwargs)

    return wrapper


class EvaTrainer(Trainer):
    """Lightning's Trainer with restricted types on the arguments a config sets, so that jsonargparse
    refuses an impossible number by its option name before anything is built.

    The batch counts are also the reason this class exists: Trainer annotates them
    ``Union[int, float]``, which typing caches and may hand back as ``Union[float, int]`` (whichever
    order an earlier import spelled), and jsonargparse tries ``float`` first: ``1`` became ``1.0``,
    i.e. all batches. Here an int is tried first: ``1`` is one batch, ``1.0`` all of them. The other
    arguments go to Trainer unchanged (LightningCLI reads them from its signature).

    Args:
        max_epochs: epochs to train (-1: no limit, stop at ``max_steps``).
        min_epochs: train at least this many epochs.
        max_steps: optimiser steps to train (-1: no limit).
        min_steps: train at least this many steps.
        limit_train_batches: training batches per epoch: an int is a number of batches, a float a fraction.
        limit_val_batches: validation batches per check: an int is a number of batches, a float a fraction.
        limit_test_batches: test batches: an int is a number of batches, a float a fraction.
        limit_predict_batches: prediction batches: an int is a number of batches, a float a fraction.
        overfit_batches: train and validate on this many training batches (int) or this fraction (float).
        val_check_interval: validate every this many training batches (int) or fraction of an epoch (float),
            or after a time (``"DD:HH:MM:SS"``, timedelta, dict).
        check_val_every_n_epoch: validate every this many epochs.
        log_every_n_steps: log every this many steps.
        accumulate_grad_batches: batches per optimiser step.
        gradient_clip_val: clip gradients to this norm/value (0 or unset: no clipping).
        num_sanity_val_steps: validation batches before training (-1: all).
        precision: Lightning's precision, or ``auto``: the fastest this machine runs well
            (:func:`auto_precision`).
    """

    def __init__(
        self,
        *,
        max_epochs: PositiveInt | Literal[-1] | None = None,
        min_epochs: NonNegativeInt | None = None,
        max_steps: PositiveInt | Literal[-1] = -1,
        min_steps: NonNegativeInt | None = None,
        limit_train_batches: Batches | None = None,
        limit_val_batches: Batches | None = None,
        limit_test_batches: Batches | None = None,
        limit_predict_batches: Batches | None = None,
        overfit_batches: Batches = 0.0,
        val_check_interval: int | ClosedUnitInterval | str | timedelta | dict[str, int] | None = None,
        check_val_every_n_epoch: PositiveInt | None = 1,
        log_every_n_steps: PositiveInt | None = None,
        accumulate_grad_batches: PositiveInt = 1,
        gradient_clip_val: NonNegativeFloat | None = None,
        num_sanity_val_steps: NonNegativeInt | Literal[-1] | None = None,
        precision: Precision = None,
        **trainer_args: Any,
    ) -> None:
        accelerator = trainer_args.get("accelerator", "auto")
        if precision == "auto":
            precision = auto_precision(accelerator)
        check_machine(accelerator, trainer_args.get("devices", "auto"), precision)
        super().__init__(
            max_epochs=max_epochs, min_epochs=min_epochs, max_steps=max_steps, min_steps=min_steps,
            limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches,
            overfit_batches=overfit_batches, val_check_interval=val_check_interval,
            check_val_every_n_epoch=check_val_every_n_epoch, log_every_n_steps=log_every_n_steps,
            accumulate_grad_batches=accumulate_grad_batches, gradient_clip_val=gradient_clip_val,
            num_sanity_val_steps=num_sanity_val_steps, precision=precision, **trainer_args,
        )

    fit = _in_one_line(Trainer.fit)
    validate = _in_one_line(Trainer.validate)
    test = _in_one_line(Trainer.test)

    def predict(self, model=None, dataloaders=None, datamodule=None, return_predictions: bool | None = None,
                ckpt_path: str | None = None, weights_only: bool | None = None, gradcam: bool = False):
        """Lightning's ``predict``; ``eva predict`` adds a :class:`~eva_lightning.callbacks.predictions.PredictionWriter`
        (``predictions.csv`` in the run directory), which reads ``gradcam`` here.

        Args:
            gradcam: also write a GradCAM overlay per image (``gradcam/<file>.png``).
        """
        self.predict_gradcam = gradcam
        with self._failures_in_one_line("predict"):
            return super().predict(model, dataloaders, datamodule, return_predictions, ckpt_path, weights_only)

    @contextmanager
    def _failures_in_one_line(self, stage: str) -> Iterator[None]:
        """A full disk (where no writer named its file) and Lightning's own SIGTERM stop as one line, not a stack
        trace or a silent exit 0 (docs/reliability.md)."""
        again = RESUME_FIT if stage == "fit" else f"free some space, then run the same eva {stage} command again"
        try:
            yield
        except SIGTERMException:  # SIGTERM before the first training step, in evaluation, or with several processes
            last = next((Path(c.dirpath) / "last.ckpt" for c in self.checkpoint_callbacks
                         if getattr(c, "filename", None) == "last" and getattr(c, "dirpath", None)), None)
            if stage != "fit":
                raise Preempted(f"SIGTERM during eva {stage}: nothing to keep; run the same command again") from None
            saved = f"the newest checkpoint is {last}" if last is not None and last.is_file() else "nothing was saved yet"
            raise Preempted(f"SIGTERM at epoch {self.current_epoch} (step {self.global_step}); {saved}; continue with "
                            "the same eva fit command plus --ckpt_path last") from None
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # the EvaError already reported, if this is a clean-up write failing after it
            raise first_cause(exc, EvaError) or EvaError(disk_full_message(self._file_of(exc), then=again)) from None

    def _file_of(self, exc: OSError) -> str:
        """The file a write without a name of its own was writing: TensorBoard's event file, or a file of the run."""
        if exc.filename:
            return str(exc.filename)
        folder = next((getattr(logger, "log_dir", None) for logger in self.loggers), None) or self.default_root_dir
        events = sorted(Path(folder).glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
        # raised by TensorBoard's event writer: its stack passes through the tensorboard package
        if events and any("tensorboard" in f.f_code.co_filename for f, _ in traceback.walk_tb(exc.__traceback__)):
            return f"{events[-1]} (TensorBoard's events)"
        return f"a file in {folder}"


def auto_precision(accelerator: Any) -> str:
    """``trainer.precision: auto``: bf16 autocast where the hardware computes bf16 natively, else fp32.

    A CUDA GPU with bf16 (Ampere and later) gets ``bf16-mixed``, an older one ``16-mixed``. A CPU gets
    ``bf16-mixed`` only with AMX or AVX-512 BF16 (``torch.cpu.get_capabilities()``); without either, bf16 is
    emulated and slower than fp32 (the measurements: benchmarks/RESULTS.md).
    """
    name = accelerator.lower() if isinstance(accelerator, str) else "custom"
    if name in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        chosen = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        log.info("trainer.precision=auto: %s on the GPU", chosen)
        return chosen
    caps = torch.cpu.get_capabilities()
    if name in ("auto", "cpu") and (caps.get("amx_bf16") or caps.get("avx512_bf16")):
        log.info("trainer.precision=auto: bf16-mixed (this CPU computes bf16 natively: AMX / AVX-512 BF16)")
        return "bf16-mixed"
    log.info("trainer.precision=auto: 32-true (%s)", "this CPU has no AMX or AVX-512 BF16, on which bf16 autocast "
             "would run slower than fp32" if name in ("auto", "cpu") else f"accelerator {accelerator}")
    return "32-true"


def check_machine(accelerator: Any, devices: Any, precision: Any) -> None:
    """Raise an :class:`EvaError` for an accelerator, device count or precision this machine cannot run.

    Lightning stops on these with messages that do not name the fix ("No supported gpu backend
    found!"), or runs them silently otherwise (99 CPU processes; ``16-mixed`` on a CPU becomes
    ``bf16-mixed``).
    """
    if not isinstance(accelerator, str):
        return  # a user's Accelerator object
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)  # jsonargparse keeps "2" a string: Trainer's type is list | str | int
    if isinstance(devices, int) and (devices == 0 or devices < -1):
        raise EvaError(f"trainer.devices={devices} is impossible: use a count of at least 1, -1 (all) or auto")
    name = accelerator.lower()
    known = {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
    if name not in known:
        raise EvaError(f"trainer.accelerator={accelerator} is unknown: use one of {', '.join(sorted(known))}")
    has_cuda, has_mps = CUDAAccelerator.is_available(), MPSAccelerator.is_available()
    needs = {"cuda": ("a CUDA GPU", has_cuda), "gpu": ("a GPU (CUDA or Apple MPS)", has_cuda or has_mps),
             "mps": ("Apple's MPS", has_mps)}
    if name in needs and not needs[name][1]:
        raise EvaError(f"trainer.accelerator={accelerator} needs {needs[name][0]}, and this machine has none that "
                       "torch can use: run with --trainer.accelerator cpu (or auto, which picks what is there)")
    if name not in ("cpu", "auto") or (name == "auto" and (has_cuda or has_mps)):
        return  # Lightning counts GPU devices itself and names the ones it has
    cores = os.cpu_count() or 1
    if isinstance(devices, (list, tuple)) or (isinstance(devices, str) and devices != "auto"):
        raise EvaError(f"trainer.devices={devices} is not a count: on a CPU it is the number of processes, "
                       "e.g. --trainer.devices 2 (or auto)")
    if isinstance(devices, int) and devices > cores:
        raise EvaError(f"trainer.devices={devices} asks for {devices} CPU processes, but this machine has {cores} "
                       f"cores: use --trainer.devices {cores} or fewer (or auto)")
    if str(precision) in ("16", "16-mixed"):
        raise EvaError(f"trainer.precision={precision} needs a GPU (fp16 autocast is not supported on a CPU, and "
                       "Lightning would switch to bf16 silently): use --trainer.precision bf16-mixed or 32-true")
