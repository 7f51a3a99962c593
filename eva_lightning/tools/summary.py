"""``eva summary``: the configured network's layer table (:mod:`eva_lightning.analysis.summary`), no data or Trainer."""

from __future__ import annotations

import sys

from eva_lightning.analysis.summary import summarize
from eva_lightning.cli import EvaCLI
from eva_lightning.core.errors import EvaError


def main(argv: list[str] | None = None) -> None:
    """``eva summary --config X [--input_shape C H W] [overrides]``: print the table (no data needed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: eva summary --config CONFIG [--input_shape C H W] [--model.init_args.X=...]\n\n"
            "Per-layer output shape, parameters, receptive field and jump of the configured model,\n"
            "with totals and constraint flags. Does not read the data set."
        )
        return
    input_shape = None
    if "--input_shape" in argv:
        i = argv.index("--input_shape")
        try:
            input_shape = tuple(int(v) for v in argv[i + 1 : i + 4])
        except ValueError:
            raise EvaError("--input_shape takes three integers: C H W") from None
        del argv[i : i + 4]

    class SummaryCLI(EvaCLI):
        def instantiate_trainer(self, **kwargs):  # a summary needs no Trainer (and no GPU)
            return None

    cli = SummaryCLI(args=argv, run=False)
    model, dm = cli.model, cli.datamodule
    if input_shape is None:
        input_shape = (dm.in_channels, dm.image_size, dm.image_size)
    table = summarize(getattr(model, "net", model), input_shape).table()
    print(f"{type(model).__name__} (model.net)\n{table}")
