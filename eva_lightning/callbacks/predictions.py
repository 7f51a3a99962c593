"""``eva predict``: a trained model on your own images → ``predictions.csv`` (+ GradCAM overlays).

    eva predict --config configs/s4.yaml --ckpt_path checkpoints/s4.ckpt --data.predict_dir my_images/ [--gradcam true]
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from eva_lightning.callbacks.hooks import batch_hooks_only_where_used
from eva_lightning.core.disk import writing
from eva_lightning.runs.layout import run_dir

log = logging.getLogger(__name__)

AGAIN = "free some space, then run the same eva predict command again"  # after a full disk

CSV_NAME = "predictions.csv"
GRADCAM_DIR = "gradcam"
OVERLAY_SIDE = 256  # px, longer side of a GradCAM overlay: MNIST-sized inputs are unreadable at 28 px


def _relative(path: Path, root: Path | None) -> str:
    return (path.relative_to(root) if root is not None and path.is_relative_to(root) else path).as_posix()


def format_topk(probs: torch.Tensor, classes: Sequence[str], k: int = 3) -> str:
    """``"7 (0.912); 1 (0.051); 9 (0.012)"`` for one probability vector."""
    values, idx = probs.topk(min(k, probs.numel()))
    return "; ".join(f"{classes[int(i)]} ({float(v):.3f})" for v, i in zip(values, idx))


@batch_hooks_only_where_used
class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (file, prediction, probability, top3) in the run directory.

    Args:
        gradcam: also write a GradCAM overlay PNG per image (``gradcam/<file>.png``), for the
            predicted class at the model's ``gradcam_layer``; None: as the trainer's ``predict(gradcam=...)`` says
            (``eva predict --gradcam true``).
        output_dir: where to write; default the run directory (:func:`eva_lightning.runs.layout.run_dir`).
    """

    def __init__(self, gradcam: bool | None = None, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.gradcam, self.output_dir = gradcam, output_dir
        self._probs: list[torch.Tensor] = []
        self._indices: list[int] = []
        self.csv_path: Path | None = None
        self._message: str | None = None  # what was written, logged once the progress bar has closed its line

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probs, self._indices, self._message = [], [], None

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int):
        self._probs.append(probs := prediction.detach().float().cpu())
        start = len(self._indices)
        self._indices.extend(batch_indices if batch_indices is not None else range(start, start + len(probs)))

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        files: list[Path] = list(getattr(dm, "predict_files", []) or [])
        skipped: list[Path] = list(getattr(dm, "predict_skipped", []) or [])
        root: Path | None = getattr(dm, "predict_dir", None)
        if not self._probs or not trainer.is_global_zero:  # one device: files and rows stay in order
            return
        order = np.argsort(np.asarray(self._indices), kind="stable")
        probs = torch.cat(self._probs)[torch.from_numpy(order)]
        indices = [self._indices[i] for i in order]
        classes = list(getattr(dm, "classes", None) or [str(i) for i in range(probs.shape[1])])
        names = [_relative(files[i], root) if i < len(files) else f"#{i}" for i in indices]
        out = Path(self.output_dir or run_dir(trainer) or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.csv_path = out / CSV_NAME
        conf, pred = probs.max(dim=1)
        with writing(self.csv_path, then=AGAIN), open(self.csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "prediction", "probability", "top3"])
            writer.writerows([name, classes[p], f"{c:.4f}", format_topk(row, classes)]
                             for name, p, c, row in zip(names, pred.tolist(), conf.tolist(), probs))
        gradcam = getattr(trainer, "predict_gradcam", False) if self.gradcam is None else self.gradcam
        overlays = self._write_gradcam(trainer, pl_module, out, indices, names, pred) if gradcam else None
        self._message = self._predicted(names, [classes[p] for p in pred.tolist()], conf.tolist(), skipped, root)
        if overlays is not None:
            self._message += f"\nGradCAM overlays → {overlays}"

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # not at epoch end: the progress bar ends its line in its on_predict_end, which runs before this one
        if self._message:
            log.info(self._message)
            self._message = None

    def _predicted(self, names: list[str], labels: list[str], conf: list[float], skipped: list[Path],
                   root: Path | None) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in sorted(Counter(labels).items(), key=lambda kv: (-kv[1], kv[0])))
        lines = [f"predicted {len(names)} image(s) → {self.csv_path}", f"  classes: {counts}"]
        lines += [f"  {name}: {label} ({c:.3f})" for name, label, c in list(zip(names, labels, conf))[:10]]
        if len(names) > 10:
            lines.append(f"  ... {len(names) - 10} more in {CSV_NAME}")
        if skipped:
            lines.append(f"skipped {len(skipped)} unreadable file(s):")
            lines.extend(f"  {_relative(p, root)}" for p in skipped)
        return "\n".join(lines)

    def _write_gradcam(self, trainer: L.Trainer, pl_module: L.LightningModule, out: Path, indices: list[int],
                       names: list[str], pred: torch.Tensor) -> Path | None:
        """A GradCAM overlay per image in ``out/gradcam``; that folder, or None where the model names no layer."""
        from eva_lightning.analysis.gradcam import gradcam, overlay

        layer = getattr(pl_module, "gradcam_layer", None)
        if layer is None:
            log.warning("no GradCAM overlays: %s names no gradcam_layer", type(pl_module).__name__)
            return None
        dm, target = trainer.datamodule, out / GRADCAM_DIR
        target.mkdir(exist_ok=True)
        batch, used = max(1, int(getattr(dm, "batch_size", 32))), set()
        for start in range(0, len(indices), batch):
            chunk = indices[start : start + batch]
            x = torch.stack([dm.predict_set[i][0] for i in chunk]).to(pl_module.device)
            cams = gradcam(pl_module, x, layer, class_idx=pred[start : start + batch])
            for j, i in enumerate(chunk):
                picture = _display_image(dm.predict_files[i])
                cam = F.interpolate(cams[j][None, None].float().cpu(), size=picture.shape[:2], mode="bilinear")[0, 0]
                flat = Path(names[start + j].replace("/", "__"))
                name = flat.stem if flat.stem not in used else f"{flat.stem}_{flat.suffix.lstrip('.')}"
                used.add(name)
                with writing(target / f"{name}.png", then=AGAIN):
                    Image.fromarray(overlay(picture, cam.clamp(0, 1))).save(target / f"{name}.png")
        return target


def _display_image(path: Path, side: int = OVERLAY_SIDE) -> np.ndarray:
    """The user's image as RGB uint8, longer side ``side`` px (the square heat map stretches back onto it)."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        return np.asarray(img.resize(size, Image.BILINEAR), dtype=np.uint8)
