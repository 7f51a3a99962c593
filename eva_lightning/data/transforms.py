"""albumentations pipelines written in YAML as ``[{name: HorizontalFlip, p: 0.5}, ...]``, every argument checked
(albumentations 2.x only warns about an unknown one and drops it: a typo would silently train without it)."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Sequence

import albumentations as A

from eva_lightning.core.errors import EvaError

TransformSpec = dict[str, Any]


def _hint(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def build_transform(spec: TransformSpec) -> A.BasicTransform:
    """One transform from ``{name: ..., <arguments>}``; unknown arguments are an error."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise EvaError(f"a transform must be written as {{name: <Transform>, <argument>: <value>}}, got {spec!r}")
    name, args = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    cls = getattr(A, name, None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        choices = [n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)]
        raise EvaError(f"unknown albumentations transform '{name}'.{_hint(name, choices)}")
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    if unknown := [key for key in args if key not in allowed]:
        raise EvaError(f"{name} has no argument '{unknown[0]}'.{_hint(unknown[0], sorted(allowed))} "
                       f"Valid arguments: {', '.join(sorted(allowed))}")
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise EvaError(f"bad arguments for {name}: {' '.join(str(exc).split())}") from None


def build_pipeline(specs: Sequence[TransformSpec] | None, mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    """A Compose ending in ToTensorV2 (appended if missing); a Normalize without ``mean``/``std`` gets the data
    set's (``None`` is just that Normalize)."""
    transforms = []
    for spec in specs if specs is not None else [{"name": "Normalize"}]:
        if isinstance(spec, dict) and spec.get("name") == "Normalize":
            spec = {"mean": list(mean), "std": list(std), "max_pixel_value": 255.0, **spec}
        transforms.append(build_transform(spec))
    if not isinstance(transforms[-1] if transforms else None, A.ToTensorV2):
        transforms.append(A.ToTensorV2())
    return A.Compose(transforms)

