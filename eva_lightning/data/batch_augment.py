"""Batched augmentation (``data.loader: batched``): one image at a time costs more than a small net's forward pass. These
ops follow albumentations 2.x (kornia's defaults differ); anything else is :class:`Unsupported` (docs/internals.md)."""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F

#: cv2 border modes for padding -> torch.nn.functional.pad modes (cv2's REFLECT_101 is torch's reflect)
PAD_MODES = {cv2.BORDER_CONSTANT: "constant", cv2.BORDER_REPLICATE: "replicate",
             cv2.BORDER_WRAP: "circular", cv2.BORDER_REFLECT_101: "reflect"}
INTERPOLATION = {cv2.INTER_LINEAR: "bilinear", cv2.INTER_NEAREST: "nearest"}


class Unsupported(ValueError):
    """A transform (or setting of one) that has no batched equivalent here."""


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _fill(value, channels: int, device: torch.device) -> torch.Tensor:
    """A fill value (number or per-channel tuple) as a cached (1, C, 1, 1) float32 tensor on ``device``."""
    # cached: building it anew would be a host-to-device copy every step
    if isinstance(value, str):
        raise Unsupported(f"fill={value!r}")
    key = (tuple(np.ravel(value).tolist()), channels, str(device))
    if key not in _CONSTANTS:
        v = torch.as_tensor(np.ravel(value), dtype=torch.float32).flatten()
        if v.numel() not in (1, channels):
            raise Unsupported(f"fill={value!r} for {channels} channels")
        _CONSTANTS[key] = v.expand(channels).reshape(1, channels, 1, 1).to(device)
    return _CONSTANTS[key]


def _uniform_int(g: torch.Generator, n: int, high: torch.Tensor | int, device) -> torch.Tensor:
    """Integers uniform in [0, high) per sample, as ``int(u * high)`` (albumentations' crop sampling)."""
    return (torch.rand(n, generator=g, device=device) * high).long()


class Op:
    """One batched transform: ``(x float (B, C, H, W) in pixel units, generator) -> x``."""

    random = True  # draws from the generator


class Pad(Op):
    """PadIfNeeded / RandomCrop(pad_if_needed): pad to at least (min_h, min_w), ``int((min - size) / 2)`` before."""

    random = False

    def __init__(self, min_h: int, min_w: int, border_mode: int, fill) -> None:
        if border_mode not in PAD_MODES:
            raise Unsupported(f"border_mode={border_mode}")
        self.min_h, self.min_w, self.mode, self.fill = min_h, min_w, PAD_MODES[border_mode], fill

    def __call__(self, x, g):
        b, c, h, w = x.shape
        top, left = max(0, self.min_h - h) // 2, max(0, self.min_w - w) // 2
        bottom, right = max(0, self.min_h - h) - top, max(0, self.min_w - w) - left
        if top == bottom == left == right == 0:
            return x
        if self.mode != "constant":
            return F.pad(x, (left, right, top, bottom), mode=self.mode)
        out = _fill(self.fill, c, x.device).expand(b, c, h + top + bottom, w + left + right)
        out = out.clone(memory_format=torch.contiguous_format)
        out[:, :, top : top + h, left : left + w] = x
        return out


class Crop(Op):
    """RandomCrop: a (h, w) window per sample at offsets uniform in [0, H - h]."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w

    def __call__(self, x, g):
        b, c, h_in, w_in = x.shape
        if self.h > h_in or self.w > w_in:
            raise Unsupported(f"crop {self.h}x{self.w} larger than image {h_in}x{w_in}")
        dev = x.device
        oy, ox = _uniform_int(g, b, h_in - self.h + 1, dev), _uniform_int(g, b, w_in - self.w + 1, dev)
        rows = (oy[:, None] + torch.arange(self.h, device=dev))[:, :, None]  # (B, h, 1)
        cols = (ox[:, None] + torch.arange(self.w, device=dev))[:, None, :]  # (B, 1, w)
        bi = torch.arange(b, device=dev)[:, None, None]
        # advanced indices around the channel slice -> (B, h, w, C): an NHWC (channels_last) batch
        return x[bi, :, rows, cols].permute(0, 3, 1, 2)


class Flip(Op):
    """HorizontalFlip(p)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, x, g):
        flip = torch.rand(x.shape[0], generator=g, device=x.device) < self.p
        return torch.where(flip[:, None, None, None], x.flip(3), x)


class Cutout(Op):
    """CoarseDropout (2.x): ``randint(*num_holes_range)`` holes, whole transform with p; integer size ranges: uniform
    in [lo, min(hi, side)], fractional: ``int(side * U(lo, hi))``; a hole's corner is uniform where it fits."""

    def __init__(self, holes: tuple[int, int], heights, widths, fill, p: float) -> None:
        self.holes, self.heights, self.widths, self.fill, self.p = holes, heights, widths, fill, p

    @staticmethod
    def _sizes(g, b, side: int, rng, dev) -> torch.Tensor:
        lo, hi = rng
        if hi >= 1:
            hi = min(int(hi), side)
            return int(lo) + _uniform_int(g, b, hi - int(lo) + 1, dev)
        return (side * (lo + (hi - lo) * torch.rand(b, generator=g, device=dev))).long()

    def __call__(self, x, g):
        b, c, h, w = x.shape
        dev = x.device
        n_holes = self.holes[0] + _uniform_int(g, b, self.holes[1] - self.holes[0] + 1, dev)
        apply = torch.rand(b, generator=g, device=dev) < self.p
        ys, xs = torch.arange(h, device=dev)[None, :, None], torch.arange(w, device=dev)[None, None, :]
        mask = torch.zeros(b, h, w, dtype=torch.bool, device=dev)
        for k in range(self.holes[1]):
            hh, ww = self._sizes(g, b, h, self.heights, dev), self._sizes(g, b, w, self.widths, dev)
            y0, x0 = _uniform_int(g, b, h - hh + 1, dev), _uniform_int(g, b, w - ww + 1, dev)
            inside = (ys >= y0[:, None, None]) & (ys < (y0 + hh)[:, None, None])
            inside = inside & (xs >= x0[:, None, None]) & (xs < (x0 + ww)[:, None, None])
            mask |= inside & (apply & (k < n_holes))[:, None, None]
        return torch.where(mask[:, None], _fill(self.fill, c, dev).to(x.dtype), x)


class Rotate(Op):
    """Rotate(limit) / Affine(rotate=...): angle ~ U(lo, hi) degrees with probability p, as albumentations
    (docs/internals.md); cv2 rounds, so grey levels may differ by one or two, geometry not."""

    def __init__(self, limit: tuple[float, float], fill, p: float, mode: str = "bilinear") -> None:
        self.limit, self.fill, self.p, self.mode = limit, fill, p, mode

    def __call__(self, x, g):
        b, c, h, w = x.shape
        dev = x.device
        lo, hi = self.limit
        angle = lo + (hi - lo) * torch.rand(b, generator=g, device=dev)
        apply = torch.rand(b, generator=g, device=dev) < self.p
        rad = torch.deg2rad(angle)
        cos, sin = torch.cos(rad), torch.sin(rad)
        # albumentations maps src -> dst by [[cos, sin], [-sin, cos]] in pixels; grid_sample: the inverse, normalised
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1)
        theta = theta.to(x.dtype)
        grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
        fill = _fill(self.fill, c, dev).to(x.dtype)
        # rotate (x - fill) with zero padding and add fill back: a constant border of any colour
        out = F.grid_sample(x - fill, grid, mode=self.mode, padding_mode="zeros", align_corners=False) + fill
        return out if self.p >= 1.0 else torch.where(apply[:, None, None, None], out, x)  # untouched samples stay exact


class Normalize(Op):
    """Normalize (standard): ``(x / max_pixel_value - mean) / std``."""

    random = False

    def __init__(self, mean: Sequence[float], std: Sequence[float], max_pixel_value: float) -> None:
        self.mean, self.std, self.max_pixel = tuple(mean), tuple(std), float(max_pixel_value)

    def __call__(self, x, g):
        mean, std = (_fill(tuple(v * self.max_pixel for v in s), x.shape[1], x.device) for s in (self.mean, self.std))
        return (x - mean) / std


def _rotate(t: A.Rotate | A.Affine) -> Rotate:
    if t.border_mode != cv2.BORDER_CONSTANT:
        raise Unsupported(f"border_mode={t.border_mode}")
    if t.interpolation not in INTERPOLATION:
        raise Unsupported(f"interpolation={t.interpolation}")
    if isinstance(t, A.Rotate):
        if t.crop_border:
            raise Unsupported("crop_border=True")
        limit = t.limit
    else:
        plain = (t.scale == {"x": (1.0, 1.0), "y": (1.0, 1.0)} and t.translate_percent is None and not t.fit_output
                 and t.translate_px == {"x": (0, 0), "y": (0, 0)} and t.shear == {"x": (0.0, 0.0), "y": (0.0, 0.0)})
        if not plain:
            raise Unsupported("scale/translate/shear (only rotate= is batched)")
        limit = t.rotate
    return Rotate(tuple(float(v) for v in limit), t.fill, t.p, INTERPOLATION[t.interpolation])


def _ops(t: A.BasicTransform) -> list[Op]:
    if isinstance(t, A.ToTensorV2):
        return []
    if isinstance(t, A.HorizontalFlip):
        return [Flip(t.p)]
    if isinstance(t, A.CoarseDropout):
        return [Cutout(tuple(t.num_holes_range), tuple(t.hole_height_range), tuple(t.hole_width_range), t.fill, t.p)]
    if isinstance(t, (A.Rotate, A.Affine)):
        return [_rotate(t)]
    if t.p < 1.0:
        raise Unsupported(f"p={t.p}")
    if isinstance(t, A.Normalize):
        if t.normalization != "standard" or t.max_pixel_value is None:
            raise Unsupported(f"normalization={t.normalization!r}, max_pixel_value={t.max_pixel_value}")
        return [Normalize(t.mean, t.std, t.max_pixel_value)]
    if isinstance(t, A.PadIfNeeded):
        if t.position != "center" or t.pad_height_divisor or t.pad_width_divisor:
            raise Unsupported("only centred padding to min_height/min_width is batched")
        return [Pad(t.min_height, t.min_width, t.border_mode, t.fill)]
    if type(t) is A.RandomCrop:
        if t.pad_if_needed and t.pad_position != "center":
            raise Unsupported(f"pad_position={t.pad_position!r}")
        crop = Crop(t.height, t.width)
        return [Pad(t.height, t.width, t.border_mode, t.fill), crop] if t.pad_if_needed else [crop]
    raise Unsupported("no batched version")


class BatchAugment:
    """An albumentations ``Compose`` as batched ops on uint8 NHWC batches; :class:`Unsupported` names the first
    transform without a batched equivalent."""

    def __init__(self, pipeline: A.Compose) -> None:
        self.ops: list[Op] = []
        for t in pipeline.transforms:
            try:
                self.ops += _ops(t)
            except Unsupported as exc:
                raise Unsupported(f"{type(t).__name__} ({exc})") from None
        self.random = any(op.random for op in self.ops)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """uint8 (B, H, W, C) -> float32 (B, C, H, W), channels_last in memory."""
        x = images.permute(0, 3, 1, 2).float()
        for op in self.ops:
            x = op(x, g)
        return x


class BatchedSplit:
    """A split's uint8 (N, H, W, C) images and labels, copied to (and a generator made on) the device
    its index batches arrive on, again only if one arrives on another device; augmented there."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: BatchAugment) -> None:
        self.images, self.labels, self.augment = images, labels, augment
        self._on: tuple[torch.Tensor, torch.Tensor, torch.Generator] | None = None

    def __call__(self, idx: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """An index batch -> ``(float32 images (B, C, H, W), labels)``; ``seed`` restarts the generator first."""
        if self._on is None or self._on[0].device != idx.device:
            g = torch.Generator(idx.device)
            g.manual_seed(torch.initial_seed())
            self._on = (self.images.to(idx.device), self.labels.to(idx.device), g)
        images, labels, g = self._on
        if seed is not None:
            g.manual_seed(seed)
        return self.augment(images[idx], g), labels[idx]
