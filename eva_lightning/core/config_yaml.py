"""jsonargparse's YAML loader (its ``set_loader`` hook), refusing a key given twice (YAML keeps the last silently)
and naming the file, line and column of a parse error (jsonargparse's message names neither)."""

from __future__ import annotations

import codecs
import logging
import os
from typing import Any

import yaml
from jsonargparse import get_loader, set_loader

log = logging.getLogger(__name__)

#: byte-order marks and their codecs, longest first (UTF-32 LE's mark begins with UTF-16 LE's)
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))

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


def use_strict_yaml() -> None:
    """Make jsonargparse's ``yaml`` mode refuse duplicate keys and name file and line in errors (idempotent)."""
    load = get_loader("yaml")
    if getattr(load, "eva_strict", False):
        return

    def strict_load(stream: str, path: str = "") -> Any:
        try:
            # node tree only (jsonargparse's loader is a SafeLoader too); its load below builds the values
            node = yaml.compose(stream, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            problem = " ".join(str(exc.problem or exc.context or "not YAML").split())
            if exc.problem and exc.context and exc.context_mark is not None:  # where the open bracket or block began
                problem += f" ({exc.context} on line {exc.context_mark.line + 1})"
            raise ConfigFileError(f"malformed YAML in {_where(str(path), exc.problem_mark, column=True)}: {problem}; "
                                  "fix the YAML there (indentation, a ':' after each key, closed brackets)") from None
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"malformed YAML in {_where(str(path), None)}: {' '.join(str(exc).split())}") from None
        _check_unique_keys(node, str(path))
        return load(stream)

    strict_load.eva_strict = True  # type: ignore[attr-defined]
    set_loader("yaml", strict_load, exceptions=(yaml.YAMLError,))


def read_config_text(path: str | os.PathLike) -> str | None:
    """The text of a config file another editor may have saved: ``None`` for plain UTF-8 (read as jsonargparse reads
    it), else the text decoded by its byte-order mark (UTF-8/16/32), or as Windows-1252 (Latin-1) with a warning;
    line endings become ``\\n``. A file no encoding fits (UTF-16 without a mark, binary) is a :class:`ConfigFileError`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None  # jsonargparse names a missing or unreadable file itself
    where = os.path.abspath(path)
    for bom, codec in BOMS:
        if data.startswith(bom):
            try:
                return _newlines(data.decode(codec))
            except UnicodeDecodeError as exc:
                raise ConfigFileError(f"config file {where} starts with a {codec.upper()} byte-order mark but is not "
                                      f"{codec.upper()} ({exc.reason} at byte {exc.start}): save it as UTF-8") from None
    if b"\x00" in data:
        raise ConfigFileError(f"config file {where} is not text eva can read: it holds NUL bytes (UTF-16 or UTF-32 "
                              "without a byte-order mark, or not a text file at all); save it as UTF-8")
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError as exc:
        bad, line = data[exc.start], data.count(b"\n", 0, exc.start) + 1
    try:
        text, codec = data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        text, codec = data.decode("latin-1"), "Latin-1"
    log.warning("config file %s is not UTF-8 (byte 0x%02x on line %d): read it as %s; save it as UTF-8 to be sure",
                where, bad, line, codec)
    return _newlines(text)


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
