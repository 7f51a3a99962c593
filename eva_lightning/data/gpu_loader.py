"""The GPU-resident loader (``data.loader: gpu``): a whole split as uint8 on the device, augmented per batch.

The assignments' networks are small and their images tiny, so a DataLoader that decodes, augments
and collates one sample at a time in Python costs more than the forward pass (airbench keeps
CIFAR-10 on the GPU and augments whole batches there for the same reason). Here the split sits on
the training device as one uint8 tensor; each step gathers a batch of shuffled indices and applies
the configured albumentations pipeline as a few batched tensor ops, with the same semantics:

====================================  ====================================================
albumentations 2.x                    here (per sample, on the device)
====================================  ====================================================
PadIfNeeded (center)                  constant fill / reflect_101 / replicate / wrap pad
RandomCrop (pad_if_needed, center)    offset ``int(u * (H - h + 1))``, as ``get_crop_coords``
HorizontalFlip(p)                     flipped with probability p
CoarseDropout (2.x ranges, fill, p)   holes sized and placed as ``CoarseDropout`` does
Rotate(limit, fill, p) / Affine       bilinear ``affine_grid``/``grid_sample`` about the
(rotate only)                         pixel centre ``(W/2 - 0.5, H/2 - 0.5)``, constant fill
Normalize (standard), ToTensorV2      ``x / max_pixel_value``, minus mean, over std
====================================  ====================================================

albumentations has no batched GPU mode and kornia's ops differ in defaults (fill, crop sampling,
hole sizes), so these few ops are written out here to keep the *configured* pipeline's meaning.
Anything else raises :class:`Unsupported` and the data module falls back to the DataLoader path.
Randomness comes from one ``torch.Generator`` on the device, seeded by (seed, epoch, rank), and
nothing in the loop reads a value back to the host (no per-step device sync).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from albumentations.augmentations.geometric import functional as fgeometric
from albumentations.pytorch import ToTensorV2

#: cv2 border modes for padding -> torch.nn.functional.pad modes (cv2's REFLECT_101 is torch's reflect)
PAD_MODES = {cv2.BORDER_CONSTANT: "constant", cv2.BORDER_REPLICATE: "replicate",
             cv2.BORDER_WRAP: "circular", cv2.BORDER_REFLECT_101: "reflect"}


class Unsupported(ValueError):
    """A transform (or setting of one) that the GPU loader cannot reproduce."""


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _fill(value, channels: int, device: torch.device) -> torch.Tensor:
    """A fill value (number or per-channel tuple) as a (1, C, 1, 1) float32 tensor on ``device``.

    Cached: building it anew each step would be a host-to-device copy per step.
    """
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

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Pad(Op):
    """PadIfNeeded / RandomCrop(pad_if_needed): pad to at least (min_h, min_w), centred."""

    def __init__(self, min_h: int, min_w: int, border_mode: int, fill) -> None:
        if border_mode not in PAD_MODES:
            raise Unsupported(f"border_mode={border_mode}")
        self.min_h, self.min_w, self.mode, self.fill = min_h, min_w, PAD_MODES[border_mode], fill

    def __call__(self, x, g):
        top, bottom, left, right = fgeometric.get_padding_params(x.shape[-2:], self.min_h, self.min_w, None, None)
        if top == bottom == left == right == 0:
            return x
        if self.mode != "constant":
            return F.pad(x, (left, right, top, bottom), mode=self.mode)
        b, c, h, w = x.shape
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
        oy = _uniform_int(g, b, h_in - self.h + 1, dev)
        ox = _uniform_int(g, b, w_in - self.w + 1, dev)
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
    """CoarseDropout (albumentations 2.x): ``randint(*num_holes_range)`` holes, whole transform with p.

    Integer ranges (upper >= 1) give sizes uniform in [lo, min(hi, side)]; fractional ranges give
    ``int(side * U(lo, hi))``. A hole's corner is uniform over the places where it fits entirely.
    """

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
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        mask = torch.zeros(b, h, w, dtype=torch.bool, device=dev)
        for k in range(self.holes[1]):
            hh = self._sizes(g, b, h, self.heights, dev)
            ww = self._sizes(g, b, w, self.widths, dev)
            y0 = _uniform_int(g, b, h - hh + 1, dev)
            x0 = _uniform_int(g, b, w - ww + 1, dev)
            inside = (ys >= y0[:, None, None]) & (ys < (y0 + hh)[:, None, None])
            inside = inside & (xs >= x0[:, None, None]) & (xs < (x0 + ww)[:, None, None])
            mask |= inside & (apply & (k < n_holes))[:, None, None]
        return torch.where(mask[:, None], _fill(self.fill, c, dev).to(x.dtype), x)


class Rotate(Op):
    """Rotate(limit) / Affine(rotate=...): angle ~ U(lo, hi) degrees with probability p.

    Same matrix as albumentations (``create_affine_transformation_matrix`` about
    ``(W/2 - 0.5, H/2 - 0.5)``, cv2's counter-clockwise sense), bilinear, constant fill; the centre
    is the origin of ``grid_sample``'s ``align_corners=False`` coordinates. cv2 rounds its
    bilinear weights to 1/32 and its uint8 result to integers: expect differences of a grey level
    or two, none in geometry.
    """

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
        # albumentations maps src -> dst by [[cos, sin], [-sin, cos]] in pixels; grid_sample needs
        # dst -> src (the inverse) in coordinates normalised by 2/W and 2/H.
        theta = torch.stack(
            [torch.stack([cos, -sin * h / w, torch.zeros_like(cos)], 1),
             torch.stack([sin * w / h, cos, torch.zeros_like(cos)], 1)], 1
        ).to(x.dtype)
        grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
        fill = _fill(self.fill, c, dev).to(x.dtype)
        # rotate (x - fill) with zero padding and add fill back: a constant border of any colour
        out = F.grid_sample(x - fill, grid, mode=self.mode, padding_mode="zeros", align_corners=False) + fill
        if self.p >= 1.0:
            return out
        return torch.where(apply[:, None, None, None], out, x)  # untouched samples stay exact


class Normalize(Op):
    """Normalize (standard): ``(x / max_pixel_value - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], max_pixel_value: float) -> None:
        self.mean, self.std, self.max_pixel = tuple(mean), tuple(std), float(max_pixel_value)

    def __call__(self, x, g):
        c = x.shape[1]
        mean = _fill(tuple(m * self.max_pixel for m in self.mean), c, x.device)
        std = _fill(tuple(v * self.max_pixel for v in self.std), c, x.device)
        return (x - mean) / std


def _default_interp(t) -> str:
    if t.interpolation == cv2.INTER_LINEAR:
        return "bilinear"
    if t.interpolation == cv2.INTER_NEAREST:
        return "nearest"
    raise Unsupported(f"interpolation={t.interpolation}")


def _op(t: A.BasicTransform) -> Op | None:
    """The batched op for one albumentations transform (None: nothing to do)."""
    name = type(t).__name__
    if isinstance(t, ToTensorV2):
        return None
    if isinstance(t, A.HorizontalFlip):
        return Flip(t.p)
    if isinstance(t, A.CoarseDropout):
        return Cutout(tuple(t.num_holes_range), tuple(t.hole_height_range), tuple(t.hole_width_range), t.fill, t.p)
    if isinstance(t, (A.Rotate, A.Affine)):
        if t.border_mode != cv2.BORDER_CONSTANT:
            raise Unsupported(f"{name}(border_mode={t.border_mode})")
        if isinstance(t, A.Rotate):
            if t.crop_border:
                raise Unsupported("Rotate(crop_border=True)")
            limit = t.limit
        else:
            plain = (
                t.scale == {"x": (1.0, 1.0), "y": (1.0, 1.0)} and t.translate_percent is None
                and t.translate_px == {"x": (0, 0), "y": (0, 0)} and t.shear == {"x": (0.0, 0.0), "y": (0.0, 0.0)}
                and not t.fit_output
            )
            if not plain:
                raise Unsupported("Affine with scale/translate/shear (only rotate= is done on the device)")
            limit = t.rotate
        return Rotate(tuple(float(v) for v in limit), t.fill, t.p, _default_interp(t))
    if t.p < 1.0:
        raise Unsupported(f"{name}(p={t.p})")
    if isinstance(t, A.Normalize):
        if t.normalization != "standard" or t.max_pixel_value is None:
            raise Unsupported(f"Normalize(normalization={t.normalization!r}, max_pixel_value={t.max_pixel_value})")
        return Normalize(t.mean, t.std, t.max_pixel_value)
    if isinstance(t, A.PadIfNeeded):
        if t.position != "center" or t.pad_height_divisor or t.pad_width_divisor:
            raise Unsupported("PadIfNeeded other than centred to min_height/min_width")
        return Pad(t.min_height, t.min_width, t.border_mode, t.fill)
    if type(t) is A.RandomCrop:
        if t.pad_if_needed and t.pad_position != "center":
            raise Unsupported(f"RandomCrop(pad_position={t.pad_position!r})")
        crop = Crop(t.height, t.width)
        return Sequential([Pad(t.height, t.width, t.border_mode, t.fill), crop]) if t.pad_if_needed else crop
    raise Unsupported(name)


class Sequential(Op):
    """Ops applied in order."""

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops

    def __call__(self, x, g):
        for op in self.ops:
            x = op(x, g)
        return x


class BatchAugment:
    """An albumentations ``Compose`` as batched tensor ops on uint8 NHWC batches.

    Raises:
        Unsupported: naming the first transform that has no batched equivalent here.
    """

    def __init__(self, pipeline: A.Compose) -> None:
        ops = []
        for t in pipeline.transforms:
            try:
                op = _op(t)
            except Unsupported as exc:
                raise Unsupported(f"{type(t).__name__}: {exc}" if str(exc) != type(t).__name__ else str(exc)) from None
            if op is not None:
                ops.append(op)
        self.op = Sequential(ops)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """uint8 (B, H, W, C) -> float32 (B, C, H, W), channels_last in memory."""
        x = images.permute(0, 3, 1, 2).float()
        return self.op(x, g)


class DeviceDataset:
    """A split as uint8 images + labels and the pipeline it is meant to go through.

    The tensors move to the training device the first time a loader asks for that device.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: BatchAugment) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.augment = augment
        self._on: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on:
            self._on = {key: (self.images.to(device), self.labels.to(device))}  # keep one copy only
        return self._on[key]


class EpochShuffle:
    """The loader's "sampler": Lightning calls ``set_epoch`` on it each epoch, as on a DistributedSampler.

    Also makes a plain ``for epoch ...: for batch in loader`` loop reshuffle (the epoch advances
    by itself after each pass unless set).
    """

    def __init__(self, seed: int) -> None:
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class DeviceLoader:
    """Batches of a :class:`DeviceDataset` on ``device``: ``(float images, int64 labels)``.

    Args:
        dataset: the split.
        batch_size: samples per batch (the last batch may be smaller, as a DataLoader's).
        shuffle: new order each epoch and the dataset's augmentation (else in order, same pipeline).
        device: where the split lives and batches are made.
        seed: base seed; the order depends on (seed, epoch), the augmentation on (seed, epoch, rank).
        rank: this process's rank; each rank takes every ``world_size``-th sample of the order,
            padded by wrapping around to equal length (DistributedSampler's rule).
        world_size: number of processes.
        channels_last: hand batches over in channels_last layout (else contiguous NCHW).
        drop_last: drop the last incomplete batch.
    """

    def __init__(
        self,
        dataset: DeviceDataset,
        batch_size: int,
        shuffle: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        drop_last: bool = False,
    ) -> None:
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.drop_last = drop_last
        self.sampler = EpochShuffle(seed)
        self.batch_sampler = None  # Lightning inspects DataLoader-like attributes; batching is done here
        self.per_rank = math.ceil(len(dataset) / world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def _order(self, g: torch.Generator) -> torch.Tensor:
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=g, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        total = self.per_rank * self.world_size
        if total > n:  # pad by wrapping so that every rank gets the same number of batches
            order = torch.cat([order, order[: total - n]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.dataset.on(self.device)
        epoch = self.sampler.epoch
        self.sampler.epoch += 1  # a plain loop reshuffles; Lightning overwrites it through set_epoch
        g = torch.Generator(device=self.device)
        g.manual_seed(self.sampler.seed * 1_000_003 + epoch)  # same order on every rank
        order = self._order(g)
        g.manual_seed((self.sampler.seed * 1_000_003 + epoch) * 1_009 + self.rank + 1)  # own augmentation
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.dataset.augment(images[idx], g)
            yield x.contiguous(memory_format=self.memory_format), labels[idx]
