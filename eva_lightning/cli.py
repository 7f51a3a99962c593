"""EvaCLI: the LightningCLI behind ``eva fit | validate | test | predict`` (dispatched by :mod:`eva_lightning.entry`).

    eva fit --config configs/s5.yaml
    eva test --config configs/s4.yaml --ckpt_path checkpoints/s4.ckpt
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import AcceleratorRegistry, CUDAAccelerator, MPSAccelerator, XLAAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ModelSummary, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import ParallelStrategy
from jsonargparse import ArgumentError, lazy_instance

from eva_lightning.console import NetworkSummary
from eva_lightning.core import ImageClassifier
from eva_lightning.data import VisionDataModule
from eva_lightning.data.transforms import build_pipeline
from eva_lightning.errors import EvaError
from eva_lightning.predict import PredictionWriter
from eva_lightning.runs.layout import newest_version, run_dir, version_number
from eva_lightning.runs.record import RunInfo, RunReport
from eva_lightning.callbacks.finite_loss import FiniteLossGuard
from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.callbacks.rng_state import RngState
from eva_lightning.checkpoints import (
    LAST,
    SafeCheckpointIO,
    check_checkpoint,
    check_checkpoint_class,
    check_class_paths,
    class_paths,
    import_dotted,
    load_checkpoint_file,
)

log = logging.getLogger(__name__)

LOG_ROOT = "lightning_logs"
SUBCOMMAND_KEY = "eva_subcommand"  # in a subcommand's parser_kwargs: see EvaCLI.init_parser


#: the default logger's name until the config names the run (``lightning_logs/<config>/version_N``)
UNNAMED = "default"


PROGRESS_REFRESH = 10  # steps between progress-bar redraws


@batch_hooks_only_where_used
class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint without the five batch hooks it leaves as no-ops (see callbacks/hooks.py)."""

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's own key ("ModelCheckpoint{...}"), so checkpoints resume across the two
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)


def latest_checkpoint() -> ModelCheckpoint:
    """``last.ckpt`` after every epoch: the model of record, and what ``--ckpt_path last`` resumes.

    Lightning's ``save_last=True`` writes ``last.ckpt`` only beside a top-k save, so with a monitored
    metric that stops improving it stays at the last improvement. Without a monitor ModelCheckpoint
    saves at every epoch end; named ``last`` without a version counter, it overwrites that one file.
    """
    return EpochCheckpoint(filename="last", monitor=None, save_top_k=1, enable_version_counter=False)


def held_out_checkpoint() -> ModelCheckpoint:
    """``best-*.ckpt``: the epoch of best ``val/acc``, kept only when validation is held out of train."""
    return EpochCheckpoint(
        monitor="val/acc",
        mode="max",
        filename="best-epoch{epoch:02d}-acc{val/acc:.4f}",
        auto_insert_metric_name=False,
    )


def holds_out_validation(datamodule) -> bool:
    """Whether validation is a split of the training set (``data.val_split > 0``), not the test split."""
    return (getattr(datamodule, "val_split", 0) or 0) > 0


class EvaTrainer(Trainer):
    """Lightning's Trainer, with batch counts given as integers kept as integers.

    Trainer annotates these ``Optional[Union[int, float]]``. typing caches unions and treats
    ``Union[int, float]`` and ``Union[float, int]`` as equal, so the annotation object it gets is
    whichever order some earlier import spelled (``float`` first once ``lightning.pytorch`` is
    imported). jsonargparse tries a union's members in order and ``float`` accepts ``1``: the
    CLI's ``--trainer.limit_val_batches 1`` became ``1.0``, i.e. 100% of the batches. The ``|``
    unions below are not cached, so ``int`` is tried first: ``1`` is one batch, ``1.0`` all of them.
    The remaining arguments go to Trainer unchanged (LightningCLI reads them from its signature).

    Args:
        limit_train_batches: training batches per epoch: an int is a number of batches, a float a fraction.
        limit_val_batches: validation batches per check: an int is a number of batches, a float a fraction.
        limit_test_batches: test batches: an int is a number of batches, a float a fraction.
        limit_predict_batches: prediction batches: an int is a number of batches, a float a fraction.
        overfit_batches: train and validate on this many training batches (int) or this fraction (float).
        val_check_interval: validate every this many training batches (int) or fraction of an epoch (float),
            or after a time (``"DD:HH:MM:SS"``, timedelta, dict).
    """

    def __init__(
        self,
        *,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | str | timedelta | dict[str, int] | None = None,
        **trainer_args: Any,
    ) -> None:
        super().__init__(
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            overfit_batches=overfit_batches,
            val_check_interval=val_check_interval,
            **trainer_args,
        )


@batch_hooks_only_where_used
class LRMonitor(LearningRateMonitor):
    """Lightning's LR monitor without the four batch hooks it leaves as no-ops (see callbacks/hooks.py)."""


def default_callbacks() -> list:
    """Callbacks of every run. ``fit`` with ``data.val_split > 0`` also gets :func:`held_out_checkpoint`."""
    return [
        latest_checkpoint(),
        LRMonitor(logging_interval="step"),
        RngState(),
        FiniteLossGuard(),
        RunInfo(),
        RunReport(),  # last: writes report.md after the other callbacks' end-of-fit figures
    ]


#: what each accelerator name needs, for check_run_settings
_ACCELERATOR_NEEDS = {"cuda": "a CUDA GPU", "gpu": "a GPU (CUDA or Apple MPS)", "mps": "Apple's MPS", "tpu": "a TPU (torch_xla)"}


def _as_int(value) -> int | None:
    """An int-like option value (``4``, ``"4"``, ``-1``) as an int; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        return int(value)
    return None


def check_run_settings(config, subcommand: str | None) -> None:
    """Raise one :class:`EvaError` for trainer settings this machine cannot run, impossible numbers
    and contradictory settings, before anything is instantiated or written.

    Lightning would stop on most of these inside ``Trainer(...)`` with a traceback, and takes some
    silently (``16-mixed`` on a CPU becomes ``bf16-mixed``; ``max_epochs: 0`` trains nothing).
    """
    cfg = config[subcommand] if subcommand else config
    trainer = cfg.get("trainer") or {}

    def fail(option: str, value, why: str) -> None:
        raise EvaError(f"trainer.{option}={value} {why}")

    # ---- the machine: accelerator, devices, precision
    accelerator = trainer.get("accelerator") or "auto"
    has_cuda, has_mps = CUDAAccelerator.is_available(), MPSAccelerator.is_available()
    kind = None  # the device type the run would use: cpu | cuda | mps | tpu (None: a user's Accelerator object)
    if isinstance(accelerator, str):
        name = accelerator.lower()
        known = {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
        if name not in known:
            fail("accelerator", accelerator, f"is unknown: use one of {', '.join(sorted(known))}")
        available = {"cuda": has_cuda, "gpu": has_cuda or has_mps, "mps": has_mps, "tpu": XLAAccelerator.is_available()}
        if name in available and not available[name]:
            fail("accelerator", accelerator, f"needs {_ACCELERATOR_NEEDS[name]}, and this machine has none that torch "
                 "can use: run with --trainer.accelerator cpu (or auto, which picks what is there)")
        kind = {"auto": "cuda" if has_cuda else "mps" if has_mps else "cpu", "gpu": "cuda" if has_cuda else "mps"}.get(name, name)
    counts = {"cuda": CUDAAccelerator.auto_device_count() if has_cuda else 0, "mps": 1, "cpu": os.cpu_count() or 1}
    devices = trainer.get("devices", "auto")
    n = _as_int(devices)
    if n is not None and (n == 0 or n < -1):
        fail("devices", devices, "is impossible: use a count of at least 1, -1 (all) or auto")
    if kind in counts and n is not None and n > counts[kind]:
        what = "CPU processes, but this machine has" if kind == "cpu" else f"{kind.upper()} devices, but torch sees"
        unit = "cores" if kind == "cpu" else "devices"
        fail("devices", devices, f"asks for {n} {what} {counts[kind]} {unit}: use --trainer.devices {counts[kind]} or fewer (or auto)")
    if kind == "cpu" and n is None and devices != "auto":
        fail("devices", devices, "is not a count: on a CPU it is the number of processes, e.g. --trainer.devices 2 (or auto)")
    if kind in counts and isinstance(devices, (list, tuple)) and any(not 0 <= int(i) < counts[kind] for i in devices):
        fail("devices", list(devices), f"names a device this machine lacks: {kind} device indices here are 0 to {counts[kind] - 1}")
    precision = str(trainer.get("precision") or "32-true")
    if precision in ("16", "16-mixed") and kind == "cpu":
        fail("precision", precision, "needs a GPU (fp16 autocast is not supported on a CPU, and Lightning would switch "
             "to bf16 silently): use --trainer.precision bf16-mixed or 32-true")

    # ---- impossible numbers (None: Lightning's default)
    def whole_or_fraction(v) -> bool:
        return v >= 0 and (v <= 1 or float(v).is_integer())

    rules = {
        "max_epochs": (lambda v: v == -1 or v >= 1, "is impossible: train at least 1 epoch (-1: no epoch limit, stop at trainer.max_steps)"),
        "min_epochs": (lambda v: v >= 0, "is impossible: use 0 or more"),
        "max_steps": (lambda v: v == -1 or v >= 1, "is impossible: use at least 1 step, or -1 (no step limit)"),
        "min_steps": (lambda v: v >= 0, "is impossible: use 0 or more"),
        "limit_train_batches": (whole_or_fraction, "is impossible: use a fraction in [0, 1] or a whole number of batches"),
        "limit_val_batches": (whole_or_fraction, "is impossible: use a fraction in [0, 1] or a whole number of batches"),
        "limit_test_batches": (whole_or_fraction, "is impossible: use a fraction in [0, 1] or a whole number of batches"),
        "limit_predict_batches": (whole_or_fraction, "is impossible: use a fraction in [0, 1] or a whole number of batches"),
        "overfit_batches": (whole_or_fraction, "is impossible: use 0 (off), a fraction in [0, 1] or a whole number of batches"),
        "val_check_interval": (lambda v: v > 0 and whole_or_fraction(v), "is impossible: use a fraction in (0, 1] of an epoch or a whole number of batches"),
        "check_val_every_n_epoch": (lambda v: v >= 1, "is impossible: validate every 1 or more epochs"),
        "log_every_n_steps": (lambda v: v >= 1, "is impossible: log every 1 or more steps"),
        "accumulate_grad_batches": (lambda v: v >= 1, "is impossible: accumulate 1 (no accumulation) or more batches"),
        "gradient_clip_val": (lambda v: v >= 0, "is impossible: use a norm/value >= 0 (0 or unset: no clipping)"),
        "num_nodes": (lambda v: v >= 1, "is impossible: use at least 1 machine"),
        "num_sanity_val_steps": (lambda v: v >= -1, "is impossible: use 0 (none), a number of batches, or -1 (all)"),
    }
    for option, (ok, why) in rules.items():
        value = trainer.get(option)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not ok(value):
            fail(option, value, why)

    # ---- contradictions in a training run (a fast_dev_run smoke test holds the LR and ignores them)
    if subcommand not in (None, "fit") or trainer.get("fast_dev_run"):
        return
    init_args = cfg.get("model.init_args") or {}
    optimizer_lr = cfg.get("model.init_args.optimizer.init_args.lr")
    if init_args.get("lr") is None and optimizer_lr == 0:  # (a Python caller may freeze weights this way on purpose)
        raise EvaError(
            "model.init_args.optimizer.init_args.lr=0 trains nothing: use a learning rate > 0 (or set model.init_args.lr)"
        )
    schedule = init_args.get("schedule")
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if (
        getattr(schedule, "name", None) == "onecycle" and isinstance(max_epochs, int) and max_epochs >= 1
        and max_steps in (None, -1) and not getattr(schedule, "peak_epoch", 0) < max_epochs
    ):
        raise EvaError(
            f"model.init_args.schedule.peak_epoch={schedule.peak_epoch} is outside the run "
            f"(trainer.max_epochs={max_epochs}): choose a peak epoch below {max_epochs}, or train longer"
        )
    batch_size, virtual = cfg.get("data.batch_size"), init_args.get("virtual_batch_size")
    if init_args.get("norm") == "gbn" and isinstance(virtual, int) and isinstance(batch_size, int) and virtual >= batch_size:
        raise EvaError(
            f"model.init_args.virtual_batch_size={virtual} with data.batch_size={batch_size}: each batch is a "
            "single ghost batch, i.e. plain BatchNorm: use a virtual_batch_size below the batch size "
            "(S6: 32 in batches of 128), or norm: bn"
        )


@batch_hooks_only_where_used
class SaveConfig(SaveConfigCallback):
    """LightningCLI's ``config.yaml``, written only into a logger's run directory.

    With ``--trainer.logger false`` Lightning's log dir falls back to the working directory, which
    the user never chose as a place for files (``eva test ... --trainer.logger false``).
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.logger is not None:
            super().setup(trainer, pl_module, stage)


class EvaCLI(LightningCLI):
    """LightningCLI with the project's model base, data module, links and defaults."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        self.subcommand_parsers: dict[str, Any] = {}  # filled by init_parser
        super().__init__(
            ImageClassifier,
            VisionDataModule,
            trainer_class=EvaTrainer,
            subclass_mode_model=True,
            auto_configure_optimizers=False,  # its optimiser/scheduler path steps per epoch only
            seed_everything_default=1,
            save_config_kwargs={"overwrite": True},
            save_config_callback=SaveConfig,
            trainer_defaults={
                "logger": lazy_instance(TensorBoardLogger, save_dir=LOG_ROOT, name=UNNAMED),
                "callbacks": default_callbacks(),
            },
            args=args,
            run=run,
            # parse errors come back as exceptions: parse_arguments rewrites them as one short message;
            # SUBCOMMAND_KEY tells init_parser which subcommand a parser is for
            parser_kwargs=kwargs.pop("parser_kwargs", None) or {
                "exit_on_error": False,
                **{sub: {"exit_on_error": False, SUBCOMMAND_KEY: sub} for sub in self.subcommands()},
            },
            **kwargs,
        )

    def init_parser(self, **kwargs):
        """Keep each subcommand's parser by name (:attr:`subcommand_parsers`).

        ``add_arguments_to_parser`` is called for each subcommand parser without its name: so that
        options that only make sense for one subcommand (``--predict.gradcam``) go only there, and
        an unknown key is matched against its own subcommand's keys.
        """
        self._building_subcommand = kwargs.pop(SUBCOMMAND_KEY, None)
        parser = super().init_parser(**kwargs)
        if self._building_subcommand:
            self.subcommand_parsers[self._building_subcommand] = parser
        return parser

    def parse_arguments(self, parser, args) -> None:
        try:
            with warnings.catch_warnings():
                # every EvaCLI(args=...) here (eva <tool>, tests, benchmarks) means those args, not
                # sys.argv; LightningCLI warns whenever both are non-empty
                warnings.filterwarnings("ignore", message=".*args parameter is intended")
                super().parse_arguments(parser, args)
        except ArgumentError as exc:
            raise EvaError(explain_parse_error(str(exc), self.subcommand_parsers, args)) from None

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyper-parameters into the model config here, and its
        # class path is then imported. Lightning 2.6 has no public hook for this step, so it is
        # done here with the project's loader: the file is read as data (weights_only) unless the
        # user trusts it, and every class path in it is checked as a string before any import.
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else {}
        ckpt_path = cfg.get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        trusted = trusts_checkpoint(cfg)
        hparams = dict(load_checkpoint_file(ckpt_path, trusted=trusted, mmap=True).get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        model = cfg.get("model")
        configured = getattr(model, "class_path", None)
        allowed = set(class_paths(model.as_dict())) if model is not None else set()  # what the user's config names
        check_checkpoint_class(ckpt_path, hparams.get("_class_path"), configured, allowed)
        check_class_paths(ckpt_path, hparams, allowed, trusted=trusted)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)
        except ArgumentError as exc:
            raise EvaError(f"the hyper-parameters saved in {ckpt_path} do not fit this model: {exc}") from None

    def instantiate_trainer(self, **kwargs):
        config = (self.config_init[self.subcommand] if self.subcommand else self.config_init).get("trainer") or {}
        callbacks = list(config.get("callbacks") or [])
        extra = []
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            # Lightning's default bar redraws every step (its batch-end hook took ~1.4 ms a step under
            # cProfile on the 2-core VM, beside steps of ~10 ms); every PROGRESS_REFRESH steps is still
            # several redraws a second at these nets' speeds.
            # (A bar in trainer_defaults would clash with --trainer.enable_progress_bar false.)
            extra.append(TQDMProgressBar(refresh_rate=PROGRESS_REFRESH))
        if config.get("enable_model_summary") is not False and not any(isinstance(c, ModelSummary) for c in callbacks):
            extra.append(NetworkSummary())  # the layer table without the metric objects and zero FLOPs
            kwargs["enable_model_summary"] = False  # else Lightning logs that a summary callback is already set
        if holds_out_validation(self.datamodule) and config.get("enable_checkpointing") is not False:
            # ahead of the default last.ckpt callback, so last.ckpt holds this one's state of the same epoch
            extra.append(held_out_checkpoint())
        if extra:
            kwargs["callbacks"] = [*callbacks, *extra]
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.logger is None:  # --trainer.logger false: Lightning's LR monitor would refuse to start
            trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own plugin
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def _place_default_logger(self) -> None:
        """Where the default TensorBoard logger writes, set in the config (so ``config.yaml`` records it).

        - its name: the stem of the last ``--config`` (``lightning_logs/s5/version_N``).

        - ``--trainer.default_root_dir DIR``: ``DIR/<config>/version_N``. As in Lightning, that is
          where a run's files go unless a logger says otherwise; the default logger's fixed
          ``save_dir=lightning_logs`` would otherwise win.
        - ``--ckpt_path last``: the newest ``version_N`` of this config that holds a ``last.ckpt``.
          The default logger starts a new ``version_N`` each run, so Lightning's own ``last`` (the
          checkpoint callback's last file of *this* run) would find nothing after a crash. ``fit``
          also logs into that version (unless the user chose one), so the resumed curves continue.
        """
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        spec = (cfg.get("trainer") or {}).get("logger")
        init = getattr(spec, "init_args", None)
        if init is None or import_dotted(spec.class_path) is not TensorBoardLogger:
            return
        if init.name == UNNAMED and cfg.get("config"):  # the run is named after the last --config (its stem)
            init.name = Path(str(cfg["config"][-1])).stem
        if cfg.get("trainer.default_root_dir") is not None and init.save_dir == LOG_ROOT:
            init.save_dir = str(cfg["trainer.default_root_dir"])
        if cfg.get("ckpt_path") != "last":
            return
        root = Path(init.save_dir) / (init.name or "")
        found = newest_version(root, lambda version: (version / "checkpoints" / LAST).is_file())
        if found is None:
            log.warning("--ckpt_path last: no %s/version_*/checkpoints/%s yet, starting a new run", root, LAST)
            cfg["ckpt_path"] = None
            return
        cfg["ckpt_path"] = str(found / "checkpoints" / LAST)
        log.info("--ckpt_path last: resuming from %s", cfg["ckpt_path"])
        if self.subcommand == "fit" and init.version is None:
            init.version = version_number(found)

    def after_fit(self) -> None:
        """With a held-out validation split, fit ends by testing the final weights on the test split.

        The figure of record is the final epoch's test accuracy (``test/acc``, ``test/loss`` in the
        logs, the console and ``report.md``); ``best-*.ckpt`` was chosen on the held-out split only.
        """
        if not holds_out_validation(self.datamodule) or self.trainer.interrupted:
            return
        self.trainer.test(self.model, datamodule=self.datamodule)  # RunReport then adds test/* to report.md

    def before_instantiate_classes(self) -> None:
        """Check the settings before anything is built or written; place the default logger."""
        check_run_settings(self.config, self.subcommand)
        self._place_default_logger()

    def instantiate_classes(self) -> None:
        """A class's own EvaError stays that one message.

        jsonargparse reports an exception raised in a model's ``__init__`` as a ValueError of a failed
        Union match (model, or None), with the EvaError as its cause.
        """
        try:
            super().instantiate_classes()
        except ValueError as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, EvaError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None

    def after_instantiate_classes(self) -> None:
        """Checks of the built objects before the subcommand runs: a bad input leaves no run directory behind."""
        if self.subcommand is None:
            return
        self._check_transforms()
        self._check_sync_batchnorm(self.subcommand)
        self._check_ckpt_path(self.subcommand)

    def _check_sync_batchnorm(self, subcommand: str) -> None:
        """torch's SyncBatchNorm runs only on CUDA; on CPU DDP it fails inside DDP's constructor."""
        wanted = self.config[subcommand].get("trainer", {}).get("sync_batchnorm")
        if wanted and isinstance(self.trainer.strategy, ParallelStrategy) and not isinstance(
            self.trainer.accelerator, CUDAAccelerator
        ):
            raise EvaError(
                "trainer.sync_batchnorm: true needs CUDA GPUs (torch's SyncBatchNorm has no CPU version): "
                "drop it for CPU runs (each process then keeps its own BatchNorm statistics)"
            )

    def _check_transforms(self) -> None:
        """Build the YAML pipelines once with placeholder statistics: unknown names/arguments fail here."""
        dm = self.datamodule
        if isinstance(dm, VisionDataModule):
            stats = (0.5,) * dm.in_channels
            for specs in (dm.train_specs, dm.test_specs):
                build_pipeline(specs, stats, stats)

    def _check_ckpt_path(self, subcommand: str) -> None:
        """Refuse ``--ckpt_path best`` without a held-out split; check a checkpoint file before Lightning loads it."""
        cfg, init = self.config[subcommand], self.config_init[subcommand]
        ckpt_path = init.get("ckpt_path")
        if ckpt_path is None:
            return
        if ckpt_path == "best" and not holds_out_validation(self.datamodule):
            raise EvaError(
                "--ckpt_path best: no best checkpoint is kept while validation is the test split "
                "(data.val_split 0), so that nothing is chosen on the test set; use --ckpt_path last "
                "or a file, or train with a held-out split (--data.val_split 0.1)"
            )
        trusted = trusts_checkpoint(cfg)
        init["weights_only"] = not trusted  # Lightning's own load: as data unless the user trusts the file
        if ckpt_path not in ("last", "best", "hpc", "registry") and not str(ckpt_path).startswith("registry:"):
            check_checkpoint(ckpt_path, self.model, trusted=trusted)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--trust_checkpoint", type=bool, default=False,
            help="Load a --ckpt_path that needs more than tensors and plain values. A checkpoint is a pickle "
                 "and such a file can run code: only for files whose author you trust (Lightning's "
                 "--weights_only false means the same).",
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")
        if getattr(self, "_building_subcommand", None) == "predict":
            # a plain option: Trainer.predict's own arguments already hold the "predict" group name
            parser.add_argument("--predict.gradcam", type=bool, default=False, help="Also write a GradCAM overlay per image.")

    def before_predict(self) -> None:
        """``predictions.csv`` (+ GradCAM overlays) in the run directory."""
        gradcam = bool(self.config.predict.get("predict.gradcam", False))
        self.trainer.callbacks.append(PredictionWriter(gradcam=gradcam))


def trusts_checkpoint(cfg) -> bool:
    """Whether the user opted in to unpickling a checkpoint in full (``--trust_checkpoint true``)."""
    return bool(cfg.get("trust_checkpoint")) or cfg.get("weights_only") is False


def explain_parse_error(message: str, parsers: dict[str, Any], args: list[str] | None) -> str:
    """jsonargparse's message without the usage screen, plus the closest valid key for an unknown one."""
    message = message.strip()
    bad = re.search(r"does not accept option '([^']+)'|Key '([^']+)' is not expected", message)
    nested = re.search(r"Problem with given class_path '([^']+)':\s*Option '([^']+)' is not accepted", message)
    hint = ""
    not_subclass = re.search(r"Import path (\S+) does not correspond to a subclass of (\w+)", message)
    if message.startswith("Problems parsing config"):
        configs = [a for i, a in enumerate(args or []) if i and args[i - 1] in ("--config", "-c")]
        where = f" in {', '.join(configs)}" if configs else ""
        return f"malformed YAML{where}: {message.split(':', 1)[1].strip()}"
    choices = _literal_choices(message)
    if choices:
        return choices
    if not_subclass:
        path, base = not_subclass.groups()
        return (
            f"model.class_path '{path}' is not a subclass of {base}: use a network from "
            f"eva_lightning.assignments (e.g. eva_lightning.assignments.s4.S4Model) or your own {base} subclass"
        )
    if bad:
        key = bad.group(1) or bad.group(2)
        subcommand = ((sys.argv[1:] if args is None else list(args)) or [""])[0]
        subparser = parsers.get(subcommand)
        keys = list(subparser.get_defaults().keys()) if subparser is not None else []
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        message = f"unknown key '{key}' in the configuration"
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys are listed by: eva {subcommand or 'fit'} --help"
    elif nested:
        class_path, key = nested.groups()
        valid = _init_args(class_path)
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        message = f"unknown key '{key}' for {class_path}"
        hint = f"; did you mean '{close[0]}'?" if close else f"; its arguments are: {', '.join(valid)}"
    return f"{message}{hint}"


def _literal_choices(message: str) -> str | None:
    """One line for a value that matches none of an option's fixed choices (jsonargparse lists every
    Union member's error on its own line): the option, the value and the valid choices."""
    nested = re.search(r"class_path '([^']+)':\s*Parser key \"([^\"]+)\":\s*Expected a typing\.Literal\[([^\]]*)\]\. "
                       r"Got value: ([^\n]*)", message)
    if nested:  # an init argument of a class: the innermost error is the one that matters
        class_path, key, literal, value = nested.groups()
        return f"{key} of {class_path}: {value.strip()} is not one of the valid values: {literal}"
    found = re.search(r'Parser key "([^"]+)":.*?Given value: ([^\n]*)', message, re.S)
    head = message.split("Errors:")[0]
    literals = re.findall(r"Literal\[([^\]]*)\]", head)
    if not found or not literals:
        return None
    choices = [c.strip() for lit in literals for c in lit.split(",")]
    if "NoneType" in head:
        choices.append("null")
    key, value = found.groups()
    return f"{key}: {value.strip()} is not one of the valid values: {', '.join(dict.fromkeys(choices))}"


def _init_args(class_path: str) -> list[str]:
    """Names a class accepts, following ``**kwargs`` up the MRO (as jsonargparse does)."""
    cls = import_dotted(class_path)
    if not isinstance(cls, type):
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def end_of_run_summary(cli: EvaCLI) -> str | None:
    """The lines ``eva fit`` / ``eva test`` end with (rank 0): final test accuracy, time, where the files are."""
    from eva_lightning.runs.report import Headline

    trainer = cli.trainer
    if cli.subcommand not in ("fit", "test") or not trainer.is_global_zero or trainer.fast_dev_run:
        return None
    run = run_dir(trainer)
    if run is not None and any(run.glob("events.out.tfevents.*")):
        return Headline.from_run(run).text()
    split = float(getattr(cli.datamodule, "val_split", 0.0) or 0.0)
    return Headline.from_trainer(trainer, cli.subcommand, split).text()  # no logger: nothing written
