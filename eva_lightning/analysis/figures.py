"""Figure plumbing shared by the callbacks and tools: the Agg backend, de-normalising, drawing an image (a figure
is saved into a run and logged by :func:`eva_lightning.runs.record.publish`)."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display: the same on a headless GPU box and in tests

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402, F401 (plt: pyplot with the Agg backend, for every figure)


def data_stats(trainer) -> tuple[Sequence[float] | None, Sequence[float] | None, Sequence[str] | None]:
    """(mean, std, class names) of the trainer's data module, or None where it has none."""
    dm = getattr(trainer, "datamodule", None)
    return tuple(getattr(dm, name, None) for name in ("mean", "std", "classes"))


def denormalize(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """(N, C, H, W) normalised → (N, C, H, W) in [0, 1]; without stats, each image is min-max scaled."""
    x = images.detach().float().cpu()
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x * s + m).clamp(0, 1)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def class_name(classes: Sequence[str] | None, idx: int) -> str:
    return str(classes[idx]) if classes is not None and 0 <= idx < len(classes) else str(idx)


def show(ax, image: torch.Tensor | np.ndarray, title: str | None = None) -> None:
    """Draw one (C, H, W) [0, 1] tensor or (H, W, 3) array without axes."""
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).numpy()
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
