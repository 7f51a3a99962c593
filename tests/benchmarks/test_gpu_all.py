"""benchmarks/gpu_all.sh --rehearse: every leg of the GPU plan on the CPU, the same summary.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_all.sh"


def planned_runs() -> list[str]:
    """The run names of the script's PLAN table."""
    plan = re.search(r'^PLAN="\n(.*?)^"', SCRIPT.read_text(), re.S | re.M).group(1)
    return [line.split()[2] for line in plan.splitlines() if line.strip()]


@pytest.mark.slow
def test_rehearsal_runs_every_planned_run_and_the_plan_fits(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    res = subprocess.run(["bash", str(SCRIPT), "--rehearse", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    total = re.search(r"= (\d+) s of at most 540 s", (out / "plan.txt").read_text())
    assert total and int(total.group(1)) <= 540
    rows = [line.strip("|").split("|") for line in (out / "summary.md").read_text().splitlines()[2:]]
    exits = {cells[0].strip(): cells[6].strip() for cells in rows}
    assert list(exits) == ["data", *[r for r in exits if r != "data"]] and sorted(exits) == sorted(planned_runs())
    failed = {run: code for run, code in exits.items() if code != "0"}
    assert not failed, (failed, res.stdout[-3000:])
    for cells in rows[1:]:
        assert cells[3].strip() == "1" and "final" in cells[4], cells  # one epoch, a final-epoch figure
    assert (out / "runs.tgz").stat().st_size > 0 and (out / "s11_bench.json").exists()
    assert len(list(out.iterdir())) <= 8  # the device tool brings back at most eight files
