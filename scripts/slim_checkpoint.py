"""A checkpoint a user can run: a training ``last.ckpt`` cut down to its weights and hyper-parameters.

    python scripts/slim_checkpoint.py RUN/checkpoints/last.ckpt checkpoints/s7.ckpt [--half]

Keeps what ``eva test`` / ``eva predict`` read (``state_dict``, the model's and the data module's
hyper-parameters, epoch and step); drops optimiser and scheduler states, loop counters and callback
states (RNG, EMA bookkeeping), which only resuming a fit needs. ``--half`` stores floating-point
tensors as float16 (half the bytes; the model casts them back to its own dtype when it loads them):
check with ``eva test`` that the accuracy moves by less than 0.05 point before committing such a file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

KEEP = ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "hparams_name", "hyper_parameters",
        "datamodule_hparams_name", "datamodule_hyper_parameters")


def slim(source: Path, target: Path, half: bool = False) -> dict:
    """Write ``source``'s weights and hyper-parameters to ``target``; return what was written."""
    full = torch.load(source, map_location="cpu", weights_only=False)  # our own training output
    kept = {key: full[key] for key in KEEP if key in full}
    if half:
        kept["state_dict"] = {name: t.half() if t.is_floating_point() else t for name, t in kept["state_dict"].items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(kept, target)
    return kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a last.ckpt of a finished run")
    parser.add_argument("target", type=Path, help="where the slim checkpoint goes, e.g. checkpoints/s7.ckpt")
    parser.add_argument("--half", action="store_true", help="store floating-point tensors as float16")
    args = parser.parse_args(argv)
    kept = slim(args.source, args.target, args.half)
    print(f"{args.target}: {args.target.stat().st_size / 1e6:.1f} MB, epoch {kept['epoch']}, "
          f"{sum(t.numel() for t in kept['state_dict'].values()):,} numbers in the state_dict")


if __name__ == "__main__":
    main()
