"""``eva`` and ``python -m eva_lightning``: dispatch to LightningCLI (:mod:`eva_lightning.cli`) or a tool. Free of
torch and lightning imports (seconds on a small CPU), so ``eva --help`` and ``--version`` answer at once."""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

#: LightningCLI's subcommands (``LightningCLI.subcommands()``; a test keeps the two in step), one line each
SUBCOMMANDS = {
    "fit": "train a config; logs, checkpoints, figures and report.md in lightning_logs/<config>/version_N",
    "validate": "one evaluation epoch on the validation split (the test split unless data.val_split > 0)",
    "test": "one evaluation epoch on the test split, e.g. of a checkpoint: --ckpt_path FILE",
    "predict": "classify your own images: --data.predict_dir DIR (predictions.csv, --gradcam true)",
}

#: ``eva <tool>``: ``name: (module with a main(argv), its line in eva --help)``
TOOLS = {
    "lr_find": ("eva_lightning.tools.lr_find", "LR range test of a config: loss-vs-LR plot, suggested LR (--apply writes it)"),
    "summary": ("eva_lightning.tools.summary", "a config's network: per-layer shapes, parameters, receptive field"),
    "compare": ("eva_lightning.tools.compare", "several runs' curves in one figure and a table of final values"),
    "report": ("eva_lightning.tools.report", "(re)write a run's report.md and print its headline"),
    "seeds": ("eva_lightning.tools.seeds", "train a config once per seed; table of final-epoch test accuracy, mean ± sd"),
    "tune": ("eva_lightning.tools.tune", "choose settings on held-out validation (Optuna): every trial kept, test split never read"),
}


#: ``(message regex, category)`` of Python warnings that are silenced, each with the reason.
HARMLESS_WARNINGS = (
    # torch 2.11 deprecates ``LeafSpec``, which lightning 2.6 still builds on the first batch (not the user's)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
#: Lightning log messages (``rank_zero_info``) that are silenced: start of the message.
HARMLESS_LOG_MESSAGES = (
    "💡 Tip:",  # advertisements for Lightning's cloud logger / model registry (litlogger, litmodels)
    "Loading `train_dataloader` to estimate number of stepping batches",  # one-cycle's steps: our doing
)
#: the loggers Lightning's ``rank_zero_info`` writes to (pytorch's and fabric's copy of the helper).
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class AboveProgressBars(logging.StreamHandler):
    """The console handler of ``eva``: each line is printed above a running tqdm progress bar
    (``tqdm.write``), not onto the end of the bar's line (a figure written mid-fit)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # as logging.StreamHandler does: report a failed write, never raise
            self.handleError(record)


def _keep(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(HARMLESS_LOG_MESSAGES)


def quiet_known_notices() -> None:
    """Silence :data:`HARMLESS_WARNINGS` and :data:`HARMLESS_LOG_MESSAGES` (idempotent); all else still prints."""
    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).addFilter(_keep)  # (addFilter skips a filter already there)


def help_text() -> str:
    """``eva --help``: every subcommand, LightningCLI's and the tools, one line each."""
    width = max(len(n) for n in [*SUBCOMMANDS, *TOOLS])
    lines = lambda d: [f"  {n:<{width}}  {h}" for n, h in d.items()]  # noqa: E731
    return "\n".join([
        "usage: eva SUBCOMMAND [options]      (eva SUBCOMMAND --help lists its options)",
        "",
        "The EVA5 assignments (MNIST, CIFAR-10; S4-S11) as one PyTorch Lightning project.",
        "",
        "Lightning subcommands (a LightningCLI: --config configs/<name>.yaml, then any --key value):",
        *lines(SUBCOMMANDS),
        "",
        "tools:",
        *lines({n: h for n, (_, h) in TOOLS.items()}),
        "",
        "options:",
        "  -h, --help  this list",
        "  --version   versions of eva-lightning, torch and lightning",
        "",
        "examples:",
        "  eva fit --config configs/s5.yaml",
        "  eva test --config configs/s4.yaml --ckpt_path checkpoints/s4.ckpt",
        "  eva summary --config configs/s7.yaml",
    ])


def _installed_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # not installed as a distribution (e.g. on PYTHONPATH): ask the module
        return importlib.import_module(package).__version__


def version_text() -> str:
    """``eva --version``."""
    from eva_lightning import __version__

    return f"eva-lightning {__version__} (torch {_installed_version('torch')}, lightning {_installed_version('lightning')})"


#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Let the process reuse the memory it frees instead of giving it back to the kernel (glibc only); True if set.

    glibc serves each allocation above its mmap threshold (128 KiB, rising to 32 MiB) with a fresh ``mmap``, unmaps
    it when freed and trims the heap, so a CPU training step, which allocates and frees its activations every step,
    faults every page in again: for the fast CIFAR recipe most of a step's kernel time (figures: docs/speed.md). No
    mmap and no trimming keeps the pages; the process holds its peak memory until it ends. By hand because no
    library does it: jemalloc or tcmalloc need ``LD_PRELOAD`` and a system package. ``EVA_MALLOC=system`` keeps
    glibc's defaults.
    """
    if os.environ.get("EVA_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        libc = ctypes.CDLL("libc.so.6")
    except (ValueError, OSError):  # no such confstr name (not glibc), or no libc.so.6
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))  # -1: never trim


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``eva`` and ``python -m eva_lightning``."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text())
        return
    if argv[0] == "--version":
        print(version_text())
        return
    keep_freed_memory()  # before torch allocates anything
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", handlers=[AboveProgressBars()])
    # `import lightning` gives its logger a handler of its own: propagated too, each line would print twice
    logging.getLogger("lightning").propagate = False
    from eva_lightning.core.disk import quiet_disk_full_in_threads
    from eva_lightning.core.errors import EvaError, Preempted

    quiet_known_notices()
    quiet_disk_full_in_threads()
    try:
        if argv[0] in TOOLS:
            importlib.import_module(TOOLS[argv[0]][0]).main(argv[1:])
        else:
            from eva_lightning.cli import EvaCLI

            # args=None lets LightningCLI read sys.argv itself (passing both makes it warn)
            cli = EvaCLI(args=None if from_command_line else argv)
            if closing := cli.closing_lines():
                # the result the user ran for, after Lightning's own tables: plain stdout, as those are
                print(closing)
    except EvaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Preempted as exc:  # SIGTERM: what was saved and how to go on
        print(f"stopped: {exc}", file=sys.stderr)
        sys.exit(exc.code)
