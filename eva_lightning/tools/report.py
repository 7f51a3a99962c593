"""``eva report RUN_DIR [-o FILE]``: (re)write a finished run's ``report.md`` (:mod:`eva_lightning.runs.report`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from eva_lightning.runs.layout import REPORT
from eva_lightning.runs.report import render_report


def is_committed(path: Path) -> bool:
    """Whether ``path`` is a reference run's file (under ``lightning_logs/reference``) or tracked by git."""
    parts = path.resolve().parts
    if any(parts[i : i + 2] == ("lightning_logs", "reference") for i in range(len(parts) - 1)):
        return True
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent,
                                 capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git: nothing is tracked
        return False
    return tracked.returncode == 0


def main(argv: list[str] | None = None) -> None:
    """``eva report RUN_DIR [-o FILE]``: (re)write ``report.md`` of a finished run and print its headline.

    A committed report (a run under ``lightning_logs/reference``, or a ``report.md`` tracked by git) is
    never rewritten: the page is printed instead. ``-o FILE`` writes it there (``-o -``: print it);
    its figure links are relative to the run folder.
    """
    parser = ArgumentParser(prog="eva report", description=main.__doc__)
    parser.add_argument("run_dir", help="a run directory (lightning_logs/<config>/version_N) or its parent")
    parser.add_argument("-o", "--output", default=None,
                        help="where the page goes: a file, or - to print it. Default: the run's report.md, "
                             "unless that is committed (lightning_logs/reference or tracked by git): printed then")
    args = parser.parse_args(argv)
    run, page, headline = render_report(args.run_dir)
    target = run / REPORT if args.output is None else Path(args.output)
    if args.output is None and is_committed(target):
        print(f"{target} is committed: not rewritten; the page follows (eva report {args.run_dir} -o FILE writes it "
              "elsewhere)", file=sys.stderr)
        target = Path("-")
    if str(target) == "-":
        print(page)
        return
    target.write_text(page)
    print(headline.text())
