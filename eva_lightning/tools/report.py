"""``eva report RUN_DIR``: (re)write ``report.md`` of a run (:mod:`eva_lightning.report`).

    eva report lightning_logs/s5/version_0      # (re)write report.md of a run
    eva report lightning_logs/s5                # the latest version of that run
"""

from __future__ import annotations

from jsonargparse import ArgumentParser

from eva_lightning.report import RunSummary, write_report


def main(argv: list[str] | None = None) -> None:
    """``eva report RUN_DIR``: (re)write ``report.md`` of a finished run."""
    parser = ArgumentParser(prog="eva report", description=main.__doc__)
    parser.add_argument("run_dir", help="a run directory (lightning_logs/<config>/version_N) or its parent")
    args = parser.parse_args(argv)
    path = write_report(args.run_dir)
    print(RunSummary.from_run_dir(path.parent).text())
