"""EvaCLI: the LightningCLI behind ``eva fit | validate | test | predict`` (dispatched by :mod:`~.entry`)."""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import pkgutil
import re
import sys
import warnings
from pathlib import Path

from jsonargparse import ArgumentError, lazy_instance
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor, ModelSummary, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import ParallelStrategy
from torch import nn

from eva_lightning.callbacks.checkpoints import held_out_checkpoint, latest_checkpoint
from eva_lightning.callbacks.finite_loss import FiniteLossGuard
from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.callbacks.model_table import LayerTable
from eva_lightning.callbacks.predictions import PredictionWriter
from eva_lightning.callbacks.preemption import Preemption
from eva_lightning.callbacks.resumed_schedule import ResumedSchedule
from eva_lightning.callbacks.rng_state import RngState
from eva_lightning.core.config_yaml import ConfigFileError, read_config_text, use_strict_yaml
from eva_lightning.core.module import ImageClassifier
from eva_lightning.core.schedules import check_span
from eva_lightning.core.checkpoints import (SafeCheckpointIO, check_checkpoint, import_dotted, load_checkpoint_file,
                                             saved_model_config, trusts_checkpoint)
from eva_lightning.core.trainer import EvaTrainer
from eva_lightning.data import VisionDataModule
from eva_lightning.core.errors import EvaError, first_cause
from eva_lightning.runs.layout import (CHECKPOINTS, EVENTS, LAST, LOG_ROOT, check_writable, last_checkpoint,
                                       newest_version, run_dir, run_name, version_number)
from eva_lightning.runs.protocol import Protocol
from eva_lightning.runs.record import RunInfo, RunReport
from eva_lightning.runs.report import Headline

log = logging.getLogger(__name__)

UNNAMED = "default"  # the default logger's name until the config names the run (lightning_logs/<config>/version_N)
PROGRESS_REFRESH = 10  # steps between progress-bar redraws


@batch_hooks_only_where_used
class LRMonitor(LearningRateMonitor):
    """Lightning's LR monitor without the four batch hooks it leaves as no-ops (see callbacks/hooks.py)."""


@batch_hooks_only_where_used
class SaveConfig(SaveConfigCallback):
    """LightningCLI's ``config.yaml``, written only into a logger's run directory (without a logger Lightning
    would write it into the working directory, which the user never chose as a place for files)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.logger is not None:
            super().setup(trainer, pl_module, stage)


class EvaArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, reading a config file saved by any editor (jsonargparse reads UTF-8 only)."""

    def parse_path(self, path, ext_vars=None, env=None, defaults=True, **kwargs):
        text = read_config_text(path)  # None: plain UTF-8, which jsonargparse reads itself
        if text is None:
            return super().parse_path(path, ext_vars=ext_vars, env=env, defaults=defaults, **kwargs)
        cwd = os.getcwd()
        os.chdir(os.path.dirname(os.path.abspath(path)))  # as jsonargparse does: includes are relative to the file
        try:
            return self.parse_string(text, path=os.path.basename(path), ext_vars=ext_vars, env=env, defaults=defaults,
                                     **kwargs)
        finally:
            os.chdir(cwd)


class EvaCLI(LightningCLI):
    """LightningCLI with the project's defaults; every configuration error ends as one :class:`EvaError` line."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        self.parsers: list = []  # every parser built (one per subcommand): the keys an unknown one is matched to
        use_strict_yaml()  # a key given twice is refused; a YAML error names the file and line
        super().__init__(
            ImageClassifier,
            VisionDataModule,
            trainer_class=EvaTrainer,
            subclass_mode_model=True,
            auto_configure_optimizers=False,  # its optimiser/scheduler path steps per epoch only
            seed_everything_default=1,
            parser_class=EvaArgumentParser,
            save_config_kwargs={"overwrite": True},
            save_config_callback=SaveConfig,
            trainer_defaults={
                # Lightning's hp_metric placeholder (-1, never updated) would fill TensorBoard's HPARAMS tab
                "logger": lazy_instance(TensorBoardLogger, save_dir=LOG_ROOT, name=UNNAMED, default_hp_metric=False),
                # RunReport last: it writes report.md after the other callbacks' end-of-fit figures
                "callbacks": [latest_checkpoint(), LRMonitor(logging_interval="step"), RngState(), FiniteLossGuard(),
                              Preemption(), ResumedSchedule(), RunInfo(), RunReport()],
            },
            args=args,
            run=run,
            # parse errors come back as exceptions, which parse_arguments turns into one line
            parser_kwargs=kwargs.pop("parser_kwargs", None)
            or {"exit_on_error": False, **{sub: {"exit_on_error": False} for sub in self.subcommands()}},
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        self.parsers.append(parser)
        parser.add_argument("--trust_checkpoint", type=bool, default=False,
                            help="Load a --ckpt_path that needs more than tensors and plain values. A checkpoint is a "
                                 "pickle and such a file can run code: only for files whose author you trust "
                                 "(Lightning's --weights_only false means the same).")
        parser.add_argument(
            "--weights_from", type=str | None, default=None,
            help="eva fit: start a NEW run from the model weights of this checkpoint (last: this config's newest "
                 "last.ckpt); optimiser, LR schedule, epochs and steps start afresh. --ckpt_path instead continues "
                 "the checkpoint's own run where it stopped.",
        )
        parser.add_argument(
            "--tuning_seeds", type=list[int] | None, default=None,
            help="The seeds whose runs chose this configuration (on a held-out validation split). Only recorded: "
                 "`eva seeds` reports the other seeds' test accuracy apart from these in-sample ones.",
        )
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="With a held-out validation split (data.val_split > 0), end fit by testing the final weights. "
                 "false: a tuning run (eva tune) that must never read the test split.",
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        try:
            with warnings.catch_warnings():
                # EvaCLI(args=...) means those args; LightningCLI warns whenever sys.argv is non-empty too
                warnings.filterwarnings("ignore", message=".*args parameter is intended")
                super().parse_arguments(parser, args)
        except (ConfigFileError, ArgumentError) as exc:
            # a config file's encoding (EvaArgumentParser.parse_path) or YAML: names the file and line already
            if (cause := first_cause(exc, ConfigFileError)) is not None:
                raise EvaError(str(cause)) from None
            argv = list(sys.argv[1:] if args is None else args)
            keys = {key for p in self.parsers for key in p.get_defaults().keys()}
            raise EvaError(one_line(str(exc), keys, argv)) from None
        sub = self.config.get("subcommand")
        seed = (self.config[sub] if sub else self.config).get("seed_everything")
        if type(seed) is int and not 0 <= seed <= 2**32 - 1:  # seed_everything would raise a bare ValueError
            raise EvaError(f"seed_everything={seed} is impossible: give a seed from 0 to 2**32 - 1 (or true: a random one)")

    def _parse_ckpt_path(self) -> None:
        # A private override (Lightning 2.6 has no hook for merging --ckpt_path's hyper-parameters): its
        # read refuses a trusted file and imports any class path in it; saved_model_config checks it first.
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else {}
        ckpt_path = cfg.get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        model = saved_model_config(ckpt_path, cfg.get("model"), trusted=trusts_checkpoint(cfg))
        if model is None:
            return
        try:
            self.config = self.parser.parse_object({sub: {"model": model}}, self.config)
        except ArgumentError as exc:
            raise EvaError(f"the hyper-parameters saved in {ckpt_path} do not fit this model: {exc}") from None

    def before_instantiate_classes(self) -> None:
        """Refuse contradictory fit settings before anything is built or written; place the default logger."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in (None, "fit") and not (cfg.get("trainer") or {}).get("fast_dev_run"):
            check_fit_settings(cfg)  # (a fast_dev_run smoke test holds the LR and ignores them)
        self._place_default_logger(cfg)

    def instantiate_classes(self) -> None:
        """A class's own EvaError stays that one message (jsonargparse wraps it in a Union match's ValueError)."""
        try:
            super().instantiate_classes()
        except ValueError as exc:
            if (cause := first_cause(exc, EvaError)) is None:
                raise
            raise cause from None

    def instantiate_trainer(self, **kwargs):
        config = (self.config_init[self.subcommand] if self.subcommand else self.config_init).get("trainer") or {}
        callbacks = list(config.get("callbacks") or [])
        extra = []
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            # Lightning's bar redraws every step (~1.4 ms of ~10); why here, not trainer_defaults: docs/internals.md
            extra.append(TQDMProgressBar(refresh_rate=PROGRESS_REFRESH))
        if config.get("enable_model_summary") is not False and not any(isinstance(c, ModelSummary) for c in callbacks):
            extra.append(LayerTable())
            kwargs["enable_model_summary"] = False  # else Lightning logs that a summary callback is already set
        if self.protocol.keeps_best_checkpoint and config.get("enable_checkpointing") is not False:
            # ahead of the default last.ckpt callback, so last.ckpt holds this one's state of the same epoch
            extra.append(held_out_checkpoint())
        if self.subcommand == "predict" and not any(isinstance(c, PredictionWriter) for c in callbacks):
            extra.append(PredictionWriter())  # predictions.csv; --gradcam (EvaTrainer.predict's) says whether overlays
        if extra:
            kwargs["callbacks"] = [*callbacks, *extra]
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError) as exc:  # Lightning's checks of its arguments
            raise EvaError(f"trainer: {exc}") from None
        if trainer.logger is None:  # --trainer.logger false: Lightning's LR monitor would refuse to start
            trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own plugin
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def after_instantiate_classes(self) -> None:
        """Checks of the built objects before the subcommand runs: a bad input leaves no run directory behind."""
        if self.subcommand is None:
            return
        if not isinstance(getattr(self.model, "net", None), nn.Module):  # e.g. a config without model.class_path
            raise EvaError(f"model.class_path={type(self.model).__module__}.{type(self.model).__qualname__} builds no "
                           f"network (self.net): set model.class_path to one of the project's models, e.g. "
                           f"'{MODELS}.s5.S5Final'")
        self._check_sync_batchnorm()
        self._check_ckpt_path()
        self._load_weights_from()
        self._check_run_root()

    def _check_run_root(self) -> None:
        """The folder the run writes to can be written (else Lightning fails with an OSError once it starts)."""
        trainer = self.trainer
        roots = [getattr(logger, "root_dir", None) or logger.save_dir for logger in trainer.loggers]
        if not trainer.loggers and trainer.checkpoint_callback is not None:
            roots.append(trainer.default_root_dir)  # checkpoints/ goes there without a logger
        for root in roots:
            if root is not None:
                check_writable(root)

    def _check_sync_batchnorm(self) -> None:
        """torch's SyncBatchNorm runs only on CUDA; on CPU DDP it fails inside DDP's constructor."""
        wanted = self.config[self.subcommand].get("trainer", {}).get("sync_batchnorm")
        strategy, accelerator = self.trainer.strategy, self.trainer.accelerator
        if wanted and isinstance(strategy, ParallelStrategy) and not isinstance(accelerator, CUDAAccelerator):
            raise EvaError(
                "trainer.sync_batchnorm: true needs CUDA GPUs (torch's SyncBatchNorm has no CPU version): "
                "drop it for CPU runs (each process then keeps its own BatchNorm statistics)"
            )

    def _check_ckpt_path(self) -> None:
        """Refuse ``--ckpt_path best`` without a held-out split; check a checkpoint file before Lightning loads it."""
        cfg, init = self.config[self.subcommand], self.config_init[self.subcommand]
        ckpt_path = init.get("ckpt_path")
        if ckpt_path is None:
            return
        if ckpt_path == "best" and not self.protocol.keeps_best_checkpoint:
            raise EvaError(
                "--ckpt_path best: no best checkpoint is kept while validation is the test split "
                "(data.val_split 0), so that nothing is chosen on the test set; use --ckpt_path last "
                "or a file, or train with a held-out split (--data.val_split 0.1)"
            )
        trusted = trusts_checkpoint(cfg)
        init["weights_only"] = not trusted  # Lightning's own load: as data unless the user trusts the file
        if ckpt_path not in ("last", "best", "hpc", "registry") and not str(ckpt_path).startswith("registry:"):
            check_checkpoint(ckpt_path, self.model, trusted=trusted)

    def _load_weights_from(self) -> None:
        """``--weights_from FILE``: the model starts from FILE's weights (checked as ``--ckpt_path`` is); nothing else."""
        cfg = self.config[self.subcommand]
        path = cfg.get("weights_from")
        if not path:
            return
        if self.subcommand != "fit":
            raise EvaError(f"--weights_from is for eva fit (a new run from a checkpoint's weights); to {self.subcommand} "
                           "a checkpoint, pass it as --ckpt_path")
        if cfg.get("ckpt_path"):
            raise EvaError("--weights_from and --ckpt_path together: --ckpt_path continues a run where it stopped "
                           "(optimiser, schedule, epoch), --weights_from starts a new run from a checkpoint's weights; "
                           "give one of them")
        trusted = trusts_checkpoint(cfg)
        check_checkpoint(path, self.model, trusted=trusted)
        self.model.load_state_dict(load_checkpoint_file(path, trusted=trusted)["state_dict"])
        log.info("--weights_from: the model starts from the weights of %s (a new run: optimiser, LR schedule and "
                 "epochs start afresh)", path)

    def _place_default_logger(self, cfg) -> None:
        """Where the default logger writes (in the config, so ``config.yaml`` records it): named after the last
        ``--config``; with ``--ckpt_path last`` the newest ``version_N`` holding one (docs/internals.md)."""
        spec = (cfg.get("trainer") or {}).get("logger")
        init = getattr(spec, "init_args", None)
        if init is None or import_dotted(spec.class_path) is not TensorBoardLogger:
            return
        if init.name == UNNAMED and cfg.get("config"):
            init.name = run_name(cfg["config"])
        if cfg.get("trainer.default_root_dir") is not None and init.save_dir == LOG_ROOT:
            init.save_dir = str(cfg["trainer.default_root_dir"])
        if "last" not in (cfg.get("weights_from"), cfg.get("ckpt_path")):
            return
        root = Path(init.save_dir) / (init.name or "")
        found = newest_version(root, lambda version: last_checkpoint(version).is_file())
        if cfg.get("weights_from") == "last":
            if found is None:
                raise EvaError(f"--weights_from last: no {root}/version_*/{CHECKPOINTS}/{LAST} yet; train this config "
                               "first, or give a checkpoint file")
            cfg["weights_from"] = str(last_checkpoint(found))
        if cfg.get("ckpt_path") != "last":
            return
        if found is None:
            log.warning("--ckpt_path last: no %s/version_*/%s/%s yet, starting a new run", root, CHECKPOINTS, LAST)
            cfg["ckpt_path"] = None
            return
        cfg["ckpt_path"] = str(last_checkpoint(found))
        log.info("--ckpt_path last: resuming from %s", cfg["ckpt_path"])
        if self.subcommand == "fit" and init.version is None:
            init.version = version_number(found)

    @property
    def protocol(self) -> Protocol:
        """This run's evaluation protocol (runs/protocol.py): the validation split, best checkpoint, final test."""
        cfg = (self.config[self.subcommand] if self.subcommand else self.config) or {}
        return Protocol.of_datamodule(self.datamodule, test_after_fit=cfg.get("test_after_fit") is not False,
                                      tta=getattr(self.model, "tta", "none"))

    def before_fit(self) -> None:
        """A fit that ends by testing leaves report.md to that test, so it is written once, with ``test/*`` on it."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunReport):
                callback.test_follows = self.protocol.tests_after_fit

    def after_fit(self) -> None:
        """With a held-out validation split (or test-time augmentation), fit ends by testing the final weights (the
        result of record), unless ``--test_after_fit false`` (a tuning trial: it never reads the test split)."""
        if not self.protocol.tests_after_fit or self.trainer.interrupted:
            return
        self.trainer.test(self.model, datamodule=self.datamodule)  # RunReport then adds test/* to report.md

    def closing_lines(self) -> str | None:
        """The lines ``eva fit`` / ``eva test`` end with (rank 0): final test accuracy, time, where the files are."""
        trainer = self.trainer
        if self.subcommand not in ("fit", "test") or not trainer.is_global_zero or trainer.fast_dev_run:
            return None
        report = next((c for c in trainer.callbacks if isinstance(c, RunReport)), None)
        if report is not None and report.headline is not None:  # the run's report.md was just written: its headline
            return report.headline.text()
        run = run_dir(trainer)
        if run is not None and any(run.glob(EVENTS)):  # a run folder without a RunReport (a user's own callbacks)
            return Headline.from_run(run).text()
        return Headline.from_trainer(trainer, self.subcommand, self.protocol).text()  # no logger: nothing written


class ParsedOnly(EvaCLI):
    """The configuration ``eva fit`` would run (jsonargparse's merge of the files and arguments) built into no
    objects: nothing instantiated, nothing written. Unknown keys and bad values are refused with the CLI's one-line
    errors. ``defaults=False``: only what the files and arguments give (not validated: a part may be partial).
    Nothing is seeded (``seed_everything`` is read, not applied)."""

    def __init__(self, args: list[str], defaults: bool = True) -> None:
        self._defaults = defaults
        super().__init__(args=args, run=False, parser_kwargs={"exit_on_error": False})

    def parse_arguments(self, parser, args) -> None:
        if self._defaults:  # EvaCLI's: its one-line errors
            super().parse_arguments(parser, args)
        else:
            self.config = parser.parse_args(args, defaults=False)

    def _set_seed(self) -> None:
        # A private override (LightningCLI seeds between parsing and building, with no hook): reading a config
        # leaves the caller's random generators and PL_GLOBAL_SEED as they were
        pass

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:  # (no subcommand: EvaCLI's after_instantiate_classes returns at once)
        pass


def check_fit_settings(cfg) -> None:
    """Raise an :class:`EvaError` for fit settings that each type allows but that contradict each other."""
    init_args = cfg.get("model.init_args") or {}
    if init_args.get("lr") is None and cfg.get("model.init_args.optimizer.init_args.lr") == 0:
        # (a Python caller may freeze weights this way on purpose)
        raise EvaError("model.init_args.optimizer.init_args.lr=0 trains nothing: use a learning rate > 0 "
                       "(or set model.init_args.lr)")
    schedule, trainer = init_args.get("schedule"), cfg.get("trainer") or {}
    check_span(schedule, trainer.get("max_epochs"), trainer.get("max_steps"))  # before a run folder is made
    batch_size, virtual = cfg.get("data.batch_size"), init_args.get("virtual_batch_size")
    if init_args.get("norm") == "gbn" and isinstance(virtual, int) and isinstance(batch_size, int) and virtual >= batch_size:
        raise EvaError(f"model.init_args.virtual_batch_size={virtual} with data.batch_size={batch_size}: each batch is "
                       "a single ghost batch, i.e. plain BatchNorm: use a virtual_batch_size below the batch size "
                       "(S6: 32 in batches of 128), or norm: bn")


def one_line(message: str, keys: set[str], argv: list[str]) -> str:
    """jsonargparse's error as one line: the option, the value given and what it takes (jsonargparse gives a line
    per Union member, nests class errors, and names an unknown key without the nearest valid one)."""
    message = message.strip()
    if message.startswith("Problems parsing config"):
        configs = [a for i, a in enumerate(argv) if i and argv[i - 1] in ("--config", "-c")]
        where = f" in {', '.join(configs)}" if configs else ""
        return f"malformed YAML{where}: {' '.join(message.split(':', 1)[1].split())}"
    if unknown := re.search(r"does not accept option '([^']+)'|Key '([^']+)' is not expected", message):
        key = unknown.group(1) or unknown.group(2)
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys are listed by: eva {(argv or ['fit'])[0]} --help"
        return f"unknown key '{key}' in the configuration; {hint}"
    missing = re.search(r"module '([\w.]+)' has no attribute '(\w+)'|No module named '([\w.]+)'", message)
    if missing and "class_path" in message:
        keys_named = re.findall(r'Parser key "([^"]+)"', message)
        option = ".init_args.".join(dict.fromkeys(keys_named)) or re.split(r"[:=]", message, maxsplit=1)[0].strip()
        module_name, attr, absent = missing.groups()
        named = [p for p in re.findall(r"class_path(?: |=)'([\w.]+)'", message) if absent and p.startswith(absent)]
        return missing_class(option, f"{module_name}.{attr}" if attr else (named or [absent])[-1])
    if unknown := re.search(r"Problem with given class_path '([^']+)':\s*Option '([^']+)' is not accepted", message):
        class_path, key = unknown.groups()
        valid = _init_args(class_path)
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"its arguments are: {', '.join(valid)}"
        return f"unknown key '{key}' for {class_path}; {hint}"
    names = re.findall(r'Parser key "([^"]+)"', message)
    if not names:
        return " ".join(message.split())
    option = names[0] if len(names) == 1 else f"{names[0]}.init_args.{names[-1]}"
    inner = message[message.rindex(f'Parser key "{names[-1]}"'):].splitlines()[1:]
    found = (re.search(r"(?:Got|Given) value: (.*)|Not of type \w+: (.+?) does not conform", line) for line in inner)
    value = next((m.group(1) or m.group(2) for m in found if m), None)
    shown = f"{option}={value.strip()}" if value and not value.startswith(("{", "NestedArg")) else option
    reasons = [r for r in dict.fromkeys(_reason(line) for line in inner) if r]
    if all(r.startswith("expected ") for r in reasons):
        reasons = ["expected " + " or ".join(r.removeprefix("expected ") for r in reasons)]
    return f"{shown}: {' or '.join(reasons)}"


def _reason(line: str) -> str | None:
    """One of jsonargparse's per-type lines as a short phrase; None for bookkeeping lines and ``None``."""
    line = re.sub(r"\. Got value: .*", "", line.strip().removeprefix("- "))
    if not line or "NoneType" in line or line.startswith(("Does not validate", "Subtypes:", "Errors:", "Given value")):
        return None
    if (literal := re.fullmatch(r"Expected a typing\.Literal\[(.*)\]", line)):
        return f"expected one of {literal.group(1)}"
    if (restricted := re.fullmatch(r"Not of type (\w+): (?:.+ )?does not conform to restriction (.*)", line)):
        return f"expected {restricted.group(1)} ({restricted.group(2)})"
    return re.sub(r"<class '(?:\w+\.)*(\w+)'>", r"\1", line.replace("Expected a ", "expected "))


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


MODELS = "eva_lightning.assignments"  # the package of the project's models
#: the base class each option's class_path must have, to suggest classes that fit there
CLASS_OPTIONS = {"model": "eva_lightning.core.module.ImageClassifier",
                 "trainer.callbacks": "lightning.pytorch.callbacks.Callback",
                 "model.init_args.optimizer": "torch.optim.Optimizer"}


def missing_class(option: str, class_path: str) -> str:
    """One line for a ``class_path`` that names no class: which part is missing, and the nearest class that exists."""
    module_name, _, name = class_path.rpartition(".")
    base = import_dotted(CLASS_OPTIONS.get(option, "builtins.object"))
    module = _import(module_name)
    if module is not None:
        what = f"module '{module_name}' has no class '{name}'"
        candidates = _classes(module, base)
    else:
        what = f"there is no module '{module_name}'"
        candidates = _classes_near(module_name, base)
    close = difflib.get_close_matches(class_path, candidates, n=1, cutoff=0.6)
    if not close:  # a right class name in the wrong module, or a near name
        by_name = {c.rpartition(".")[2]: c for c in candidates}
        close = [by_name[n] for n in difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.6)]
    hint = (f"did you mean '{close[0]}'?" if close else
            f"the project's models are classes in {MODELS}, e.g. '{MODELS}.s5.S5Final'" if base is ImageClassifier
            else "check the spelling (module path, then class name)")
    return f"{option}.class_path '{class_path}' does not exist: {what}; {hint}"


def _import(module_name: str):
    try:
        return importlib.import_module(module_name)
    except Exception:  # ImportError, or a module that fails while importing: either way not a source of classes
        return None


def _classes(module, base: type) -> list[str]:
    return [f"{module.__name__}.{n}" for n, v in vars(module).items()
            if isinstance(v, type) and not n.startswith("_") and issubclass(v, base)]


def _classes_near(module_name: str, base: type) -> list[str]:
    """Classes of ``base`` in the submodules of the missing module's longest importable prefix (or of MODELS)."""
    parts = module_name.split(".")
    packages = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    if base is ImageClassifier:
        packages.insert(0, MODELS)
    for package in packages:
        found = _import(package)
        if found is None or not hasattr(found, "__path__"):
            continue
        modules = [_import(f"{package}.{m.name}") for m in pkgutil.iter_modules(found.__path__)]
        classes = [c for m in [found, *modules] if m is not None for c in _classes(m, base)]
        if classes:
            return classes
    return []
