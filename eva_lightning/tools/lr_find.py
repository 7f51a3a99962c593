"""``eva lr_find --config X [--lr_find.min_lr --lr_find.max_lr --lr_find.num_training] [--apply]`` (docs/tools.md):
Lightning's ``Tuner.lr_find`` with :func:`~eva_lightning.callbacks.lr_range.suggest_lr`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from eva_lightning.core.errors import EvaError


@dataclass
class LRFindOptions:
    """The range test.

    Args:
        min_lr: smallest LR tried.
        max_lr: largest LR tried.
        num_training: steps (one LR each).
        mode: ``exponential`` or ``linear`` steps.
        early_stop_threshold: stop when the loss passes this multiple of the best loss.
        plot: the figure file; default ``<run dir>/lr_find.png``.
        apply_to: the config written by ``--apply``; default ``<config stem>_lr.yaml`` beside it.
    """

    min_lr: float = 1e-5
    max_lr: float = 1.0
    num_training: int = 100
    mode: str = "exponential"
    early_stop_threshold: float | None = 4.0
    plot: str | None = None
    apply_to: str | None = None


def apply_lr(config: Path, lr: float, out: Path) -> Path:
    """Write ``out``: a config that includes ``config`` (keeping all it composes) and sets ``model.init_args.lr`` (a
    dotted key: only the LR; YAML floats round-trip exactly); an ``LRRangeTest`` in it skips itself."""
    if out.resolve() == config.resolve():
        raise EvaError(f"--lr_find.apply_to {out} is the config itself: choose another file (default <config>_lr.yaml)")
    include = Path(os.path.relpath(config.resolve(), out.resolve().parent)).as_posix()
    if include.startswith("../.."):  # far apart: a path that does not depend on where out is
        include = config.resolve().as_posix()
    out.write_text(
        f"# {config.name} with the LR from `eva lr_find` ({lr:.4g}). An LRRangeTest callback skips itself while\n"
        "# model.init_args.lr is set (delete that line to run the range test again).\n"
        f"config: {include}   # merged first, as it is\n"
        f"model.init_args.lr: {float(lr)!r}\n"
    )
    return out


def _config_paths(argv: list[str]) -> list[Path]:
    """The ``--config`` files on the command line, in order (``--apply`` includes the last one)."""
    found = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            found.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            found.append(Path(arg.split("=", 1)[1]))
    return found


def range_test(trainer, model, datamodule, opts: LRFindOptions):
    """``Tuner.lr_find`` with ``opts`` (it restores the model and optimiser state): Lightning's LR finder, or None."""
    from lightning.pytorch.callbacks import LearningRateFinder
    from lightning.pytorch.tuner import Tuner

    from eva_lightning.callbacks.lr_range import check_sweep, scratch_checkpoint

    if trainer.fast_dev_run:
        raise EvaError("eva lr_find does nothing under trainer.fast_dev_run: drop it (--trainer.fast_dev_run=false)")
    check_sweep(opts.min_lr, opts.max_lr, opts.num_training, opts.mode, opts.early_stop_threshold, "--lr_find.")
    # a range-test callback in the config (LRRangeTest) would run twice: the Tuner refuses it
    trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, LearningRateFinder)]
    with scratch_checkpoint(trainer, opts.num_training):
        return Tuner(trainer).lr_find(model, datamodule=datamodule, min_lr=opts.min_lr, max_lr=opts.max_lr,
                                      num_training=opts.num_training, mode=opts.mode,
                                      early_stop_threshold=opts.early_stop_threshold, update_attr=False)


def main(argv: list[str]) -> float:
    """Run the range test; returns the suggested LR."""
    from jsonargparse import ActionYesNo

    from eva_lightning.analysis.figures import plt
    from eva_lightning.runs.record import publish
    from eva_lightning.callbacks.lr_range import lr_plot, suggestion
    from eva_lightning.cli import EvaCLI

    class LRFindCLI(EvaCLI):
        def add_arguments_to_parser(self, parser) -> None:
            super().add_arguments_to_parser(parser)
            parser.add_dataclass_arguments(LRFindOptions, "lr_find")
            parser.add_argument("--apply", action=ActionYesNo, default=False,
                                help="write a config that includes the last --config and sets model.init_args.lr "
                                     "to the suggestion (--lr_find.apply_to, default <config>_lr.yaml beside it)")

    configs = _config_paths(argv)
    if "--apply" in argv and not configs:
        raise EvaError("--apply needs --config FILE: the config it writes includes that file")
    cli = LRFindCLI(args=argv, run=False, parser_kwargs={"exit_on_error": False, "prog": "eva lr_find"})
    opts: LRFindOptions = cli.config_init["lr_find"]
    trainer, model = cli.trainer, cli.model
    finder = range_test(trainer, model, cli.datamodule, opts)
    lr = suggestion(finder, opts.mode)
    if lr is None:
        lrs = finder.results["lr"] if finder else []
        if 0 < len(lrs) < opts.num_training:  # Lightning stopped the sweep at early_stop_threshold
            raise EvaError(f"the loss diverged after {len(lrs)} steps of the range test (at LR {lrs[-1]:.3g}), too few "
                           "for a suggestion: lower --lr_find.max_lr (or raise --lr_find.early_stop_threshold)")
        raise EvaError(f"the range test gave no suggestion ({len(lrs)} points): "
                       "raise --lr_find.num_training or use more training batches")
    if trainer.is_global_zero:
        fig = lr_plot(finder, f"{type(model).__name__}: suggested LR {lr:.3g}", opts.mode)
        if opts.plot:
            out = Path(opts.plot)
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out)
            plt.close(fig)
        else:
            out = publish(fig, trainer, "lr_find", "lr_find.png")
        print(f"suggested LR: {lr:.4g}\nplot: {out}")
        if cli.config_init.get("apply"):
            config = configs[-1]
            target = Path(opts.apply_to) if opts.apply_to else config.with_name(f"{config.stem}_lr.yaml")
            apply_lr(config, lr, target)
            earlier = "".join(f" --config {c}" for c in configs[:-1])  # the new file replaces only the last
            print(f"config with model.init_args.lr={lr:.4g}: {target}\ntrain with: eva fit{earlier} --config {target}")
    return lr
