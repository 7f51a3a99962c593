"""Screenshot of TensorBoard over the reference runs, taken in headless Chromium → docs/dashboard.png.

    apt-get install -y chromium            # Debian's package
    python scripts/dashboard_screenshot.py [--logdir lightning_logs/reference] [--out docs/dashboard.png]

Starts TensorBoard on a free local port, waits until it has loaded the runs, lets Chromium render
the scalars dashboard (filtered to ``--tags``) and stops TensorBoard again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_runs(base: str, timeout: float = 120.0) -> list[str]:
    """Poll TensorBoard until its run list is non-empty (it loads event files in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/data/runs", timeout=5) as resp:
                runs = json.load(resp)
            if runs:
                return runs
        except OSError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"error: TensorBoard at {base} listed no runs within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default=str(ROOT / "lightning_logs" / "reference"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--tags", default="^(train|val)/(acc|loss)$|^lr$", help="regex of the scalar tags to show")
    parser.add_argument("--size", default="1600,1100", help="window width,height in px")
    parser.add_argument("--render_ms", type=int, default=20000, help="virtual time Chromium gives the page")
    args = parser.parse_args(argv)

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        raise SystemExit("error: no Chromium found: apt-get install -y chromium")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tb = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir, "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        runs = wait_for_runs(base)
        query = urllib.parse.urlencode({"tagFilter": args.tags, "_smoothingWeight": "0"}, quote_via=urllib.parse.quote)
        url = f"{base}/?darkMode=false#scalars&{query}"
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--window-size={args.size}", f"--virtual-time-budget={args.render_ms}",
             f"--screenshot={out.resolve()}", url],
            check=True, timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        print(f"{out}: TensorBoard over {len(runs)} run(s) in {args.logdir}: {', '.join(sorted(runs))}")  # script output
    finally:
        tb.terminate()
        tb.wait(timeout=30)


if __name__ == "__main__":
    main()
