"""Training compute of a config: FLOPs of one image's forward + backward pass, times the images it trains on.

torch's own ``FlopCounterMode`` counts the pass (matrix multiplies and convolutions, 2 FLOPs per multiply-add;
the elementwise layers are left out, as in the published airbench figures); the run's images are
``max_epochs x`` the training split (less ``data.val_split``). Not counted: evaluation, test-time augmentation,
the LR range test's steps.

    python benchmarks/flops.py --config configs/cifar10_fast.yaml --config configs/s7.yaml --config configs/s11.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plain_loop import build  # noqa: E402

#: training-split sizes of the known data sets (the count does not need the data on disk)
TRAIN_IMAGES = {"mnist": 60_000, "cifar10": 50_000}


def training_flops(config: str) -> dict:
    cli = build(config, ["--trainer.logger", "false"])
    model, dm = cli.model, cli.datamodule
    side = dm.image_size
    x = torch.randn(2, dm.in_channels, side, side)
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    per_image = counter.get_total_flops() / 2
    n_train = TRAIN_IMAGES[dm.dataset]
    held_out = dm.val_split if dm.val_split >= 1 else round(dm.val_split * n_train)
    images = cli.trainer.max_epochs * (n_train - held_out)
    return {"config": config, "gflop_per_image": per_image / 1e9, "images": images,
            "pflop": per_image * images / 1e15}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, action="append", help="a config to count (repeat for several)")
    rows = [training_flops(c) for c in parser.parse_args(argv).config]
    print("| config | GFLOP per training image (fwd + bwd) | images trained | PFLOP |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['config']} | {r['gflop_per_image']:.3f} | {r['images']:,} | {r['pflop']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
