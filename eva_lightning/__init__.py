"""EVA5 assignments as one Lightning project."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _version() -> str:
    """The installed distribution's version, else (a plain checkout on PYTHONPATH) pyproject.toml's."""
    try:
        return version("eva-lightning")
    except PackageNotFoundError:
        pass
    try:
        import tomllib  # Python >= 3.11

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]
    except (ImportError, OSError, KeyError, ValueError):
        return "unknown"


__version__ = _version()
