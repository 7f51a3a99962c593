"""The package's layers (pyproject.toml, ``[tool.importlinter]``): no module imports a layer above its own."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, eva_env


def lint_imports() -> str:
    """The ``lint-imports`` beside this Python (the venv's), else on the PATH."""
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.is_file() else shutil.which("lint-imports")
    assert found, "lint-imports is missing: install the dev extras (pip install -e '.[dev]', as make test does)"
    return found


def test_packages_import_one_way():
    done = subprocess.run([lint_imports(), "--no-cache"], cwd=ROOT, env=eva_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout  # the contract was read and checked, not skipped
