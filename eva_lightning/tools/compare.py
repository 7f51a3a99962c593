"""``eva compare RUN_DIR... [--metrics val/loss val/acc] --out fig.png``: several runs' curves in one figure.

Prints a table of final values (best only for a held-out split): :mod:`eva_lightning.analysis.compare`.
"""

from __future__ import annotations

from jsonargparse import ArgumentParser

from eva_lightning.analysis.compare import DEFAULT_METRICS, compare, notes, table


def main(argv: list[str] | None = None) -> None:
    """Parse ``eva compare`` arguments, draw the figure, print the table."""
    parser = ArgumentParser(prog="eva compare", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run dirs (lightning_logs/<name> or .../version_N)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="scalar tags to plot")
    parser.add_argument("--out", default="compare.png", help="figure file")
    args = parser.parse_args(argv)
    results = compare(args.runs, list(args.metrics), args.out)
    print(table(results))
    for line in notes(results):
        print(line)
    print(f"figure: {args.out}")
