"""``eva``: LightningCLI for fit/validate/test/predict, plus the analysis tools.

    eva fit --config configs/s5.yaml
    eva test --config configs/s4.yaml --ckpt_path checkpoints/s4.ckpt
    eva lr_find | summary | compare | report ...   (see ``eva <tool> --help``)
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from jsonargparse import lazy_instance

from eva_lightning.core import ImageClassifier
from eva_lightning.data import VisionDataModule
from eva_lightning.errors import EvaError
from eva_lightning.predict import PredictionWriter
from eva_lightning.report import RunReport

#: ``eva <tool>`` subcommands that are not Trainer methods: module with a ``main(argv)``.
TOOLS = {
    "lr_find": "eva_lightning.tools.lr_find",
    "summary": "eva_lightning.analysis.summary",
    "compare": "eva_lightning.analysis.compare",
    "report": "eva_lightning.report",
}

LOG_ROOT = "lightning_logs"


def run_name(argv: list[str]) -> str:
    """The run's name in ``lightning_logs/<name>/version_N``: the stem of the last ``--config``."""
    name = "default"
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            name = Path(argv[i + 1]).stem
        elif arg.startswith("--config="):
            name = Path(arg.split("=", 1)[1]).stem
    return name


def default_callbacks() -> list:
    return [
        ModelCheckpoint(
            monitor="val/acc",
            mode="max",
            save_last=True,
            filename="best-epoch{epoch:02d}-acc{val/acc:.4f}",
            auto_insert_metric_name=False,
        ),
        LearningRateMonitor(logging_interval="step"),
        RunReport(),  # last: writes report.md after the other callbacks' end-of-fit figures
    ]


class EvaCLI(LightningCLI):
    """LightningCLI with the project's model base, data module, links and defaults."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        argv = list(sys.argv[1:] if args is None else args)
        super().__init__(
            ImageClassifier,
            VisionDataModule,
            subclass_mode_model=True,
            auto_configure_optimizers=False,  # its optimiser/scheduler path steps per epoch only
            seed_everything_default=1,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": lazy_instance(TensorBoardLogger, save_dir=LOG_ROOT, name=run_name(argv)),
                "callbacks": default_callbacks(),
            },
            args=args,
            run=run,
            **kwargs,
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        # add_arguments_to_parser is called once per subcommand parser without its name; keep it
        # so options that only make sense for one subcommand (--predict.gradcam) go only there
        self._building_subcommand = subcommand
        return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")
        if getattr(self, "_building_subcommand", None) == "predict":
            # a plain option: Trainer.predict's own arguments already hold the "predict" group name
            parser.add_argument("--predict.gradcam", type=bool, default=False, help="Also write a GradCAM overlay per image.")

    def before_predict(self) -> None:
        """``predictions.csv`` (+ GradCAM overlays) in the run directory."""
        gradcam = bool(self.config.predict.get("predict.gradcam", False))
        self.trainer.callbacks.append(PredictionWriter(gradcam=gradcam))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``eva`` and ``python -m eva_lightning``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] in TOOLS:
            importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
        else:
            EvaCLI(args=argv)
    except EvaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
