"""``eva summary``: the configured network's layer table (:mod:`eva_lightning.analysis.summary`), no data or Trainer."""

from __future__ import annotations

from eva_lightning.analysis.summary import summarize
from eva_lightning.cli import EvaCLI


class SummaryCLI(EvaCLI):
    """``eva summary --config X [--input_shape C H W] [overrides]``: per-layer output shape, parameters, receptive
    field and jump of the configured model, with totals and constraint flags. Does not read the data set."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--input_shape", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                            help="input of the table (default: the data module's channels and image size)")

    def instantiate_trainer(self, **kwargs):  # a summary needs no Trainer (and no GPU)
        return None


def main(argv: list[str] | None = None) -> None:
    """Print the table of the configured model's ``net``."""
    cli = SummaryCLI(args=argv, run=False, parser_kwargs={"prog": "eva summary", "description": SummaryCLI.__doc__})
    model, dm = cli.model, cli.datamodule
    input_shape = cli.config.get("input_shape") or (dm.in_channels, dm.image_size, dm.image_size)
    table = summarize(getattr(model, "net", model), tuple(input_shape)).table()
    print(f"{type(model).__name__} (model.net)\n{table}")
