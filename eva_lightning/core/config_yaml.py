"""jsonargparse's YAML loader (its ``set_loader`` hook), refusing a key given twice (YAML keeps the last silently)
and naming the file, line and column of a parse error (jsonargparse's message names neither)."""

from __future__ import annotations

import os
from typing import Any

import yaml
from jsonargparse import get_loader, set_loader

class ConfigFileError(yaml.YAMLError):
    """A config text that eva refuses; the message names the file (if any), the line and the fix."""


def _where(path: str, mark: yaml.Mark | None, column: bool = False) -> str:
    # jsonargparse reads a config file from inside its folder and passes its base name: make it whole
    name = os.path.abspath(path) if path else "a YAML value on the command line"
    if mark is None:
        return name
    return f"{name}, line {mark.line + 1}" + (f", column {mark.column + 1}" if column else "")


def _check_unique_keys(node: yaml.Node, path: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise ConfigFileError(
                        f"duplicate key '{key.value}' in {_where(path, key.start_mark)} (first on line "
                        f"{seen[key.value]}): YAML would silently keep only the last; keep one of them")
                seen[key.value] = key.start_mark.line + 1
            _check_unique_keys(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, path)


def make_strict_loader(load):
    """``load`` (jsonargparse's YAML loader) with duplicate keys refused and errors naming file and line."""

    def strict_load(stream: str, path: str = "") -> Any:
        try:
            # node tree only (jsonargparse's loader is a SafeLoader too); its load below builds the values
            _check_unique_keys(yaml.compose(stream, Loader=yaml.SafeLoader), str(path))
        except ConfigFileError:
            raise
        except yaml.MarkedYAMLError as exc:
            problem = " ".join(str(exc.problem or exc.context or "not YAML").split())
            if exc.problem and exc.context and exc.context_mark is not None:  # where the open bracket or block began
                problem += f" ({exc.context} on line {exc.context_mark.line + 1})"
            raise ConfigFileError(f"malformed YAML in {_where(str(path), exc.problem_mark, column=True)}: {problem}; "
                                  "fix the YAML there (indentation, a ':' after each key, closed brackets)") from None
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"malformed YAML in {_where(str(path), None)}: {' '.join(str(exc).split())}") from None
        return load(stream)

    strict_load.eva_strict = True  # type: ignore[attr-defined]
    return strict_load


def use_strict_yaml() -> None:
    """Make jsonargparse's ``yaml`` mode use :func:`make_strict_loader` (idempotent)."""
    current = get_loader("yaml")
    if not getattr(current, "eva_strict", False):
        set_loader("yaml", make_strict_loader(current), exceptions=(yaml.YAMLError,))
