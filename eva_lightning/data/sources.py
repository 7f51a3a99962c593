"""Reading torchvision's data sets and ImageFolder trees into in-memory uint8 arrays.

Every source ends as ``(images, labels, classes)``: images ``uint8`` of shape (N, H, W, C),
labels ``int64`` of shape (N,). The arrays are small (CIFAR-10 is 180 MB), so holding them in
memory beats decoding files every epoch; folder trees are decoded once and cached as ``.npz``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat as stat_mod
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from eva_lightning.data.datasets import DatasetInfo, TorchvisionFiles
from eva_lightning.errors import EvaError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Split:
    """One split held in memory."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]


def data_missing(data_dir: Path, looked_for: list[str], download: bool) -> EvaError:
    """The offline error: where we looked, what for, and the two ways out."""
    tried = "\n".join(f"  - {p}" for p in looked_for)
    why = "download is disabled (data.download: false)" if not download else "the download failed (no internet?)"
    # downloading was already on when it failed: the second way out is a connection, not the flag
    second = (
        "allowing the download on a machine with internet: --data.download true" if not download
        else f"running once on a machine that reaches the internet, or copying the data into {data_dir} as listed above"
    )
    return EvaError(f"no data found in data_dir={data_dir} and {why}.\nLooked for:\n{tried}\nFix it by either:\n"
                    "  1. pointing at a folder that has the data: --data.data_dir /path/to/data "
                    f"(or export EVA_DATA_DIR=/path/to/data), or\n  2. {second}")


# --------------------------------------------------------------------------- torchvision files
def torchvision_present(files: TorchvisionFiles, root: Path) -> bool:
    """Whether torchvision's files of both splits are under ``root``."""
    return all((root / marker).exists() for marker in files.markers)


def load_torchvision(files: TorchvisionFiles, root: Path, train: bool, classes: tuple[str, ...] | None = None,
                     download: bool = False) -> Split:
    """Read (and, only when asked, download) a torchvision data set into arrays."""
    from torchvision import datasets

    ds = getattr(datasets, files.dataset)(str(root), train=train, download=download)
    images = np.asarray(ds.data, dtype=np.uint8)  # a tensor or an array, by data set; grey ones lack the C axis
    images = np.ascontiguousarray(images[..., None] if images.ndim == 3 else images)
    return Split(images, np.asarray(ds.targets, dtype=np.int64), classes or tuple(ds.classes))


# --------------------------------------------------------------------------- image folders
def decode_image(data: bytes | Path, name: str, channels: int, size: int | None) -> np.ndarray | None:
    """Decode one image to (H, W, C) uint8, or None (with a warning) if it is not an image."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        log.warning("skipping %s: not a readable image (%s)", name, exc)
        return None
    return arr[..., None] if arr.ndim == 2 else arr


def _decode_classes(per_class: dict[str, list[tuple[str, bytes | Path]]], channels: int, size: int | None,
                    where: str) -> Split:
    """Decode ``{class: [(name, file or bytes), ...]}`` (classes sorted); files that are not images are skipped."""
    classes = tuple(sorted(per_class))
    images, labels = [], []
    for idx, cls in enumerate(classes):
        for name, data in per_class[cls]:
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                log.warning("skipping %s: not an image file (suffix %r)", name, Path(name).suffix)
                continue
            arr = decode_image(data, name, channels, size)
            if arr is not None:
                images.append(arr)
                labels.append(idx)
    if not images:
        raise EvaError(f"no readable images in {where}")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise EvaError(f"images in {where} have different sizes {sorted(shapes)[:3]}...; "
                       "set data.image_size to resize them to one square size")
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64), classes)


def read_folder(split_dir: Path, channels: int, size: int | None) -> Split:
    """Decode an ImageFolder split (``<split_dir>/<class>/<image>``); unreadable files are skipped."""
    classes = tuple(sorted(d.name for d in split_dir.iterdir() if d.is_dir()))
    if not classes:
        raise EvaError(f"{split_dir} has no class folders (expected {split_dir}/<class>/<image files>)")
    per_class = {cls: [(str(p), p) for p in sorted((split_dir / cls).rglob("*")) if p.is_file()] for cls in classes}
    for cls, files in per_class.items():
        if not files:
            raise EvaError(f"class folder {split_dir / cls} is empty: add images or remove the folder")
    return _decode_classes(per_class, channels, size, str(split_dir))


def read_folder_archive(archive: Path, split: str, channels: int, size: int | None) -> Split:
    """Decode one split straight out of a ``.tar.gz`` ImageFolder export, without unpacking it."""
    per_class: dict[str, list[tuple[str, bytes]]] = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = Path(member.name).parts
            # <top>/<split>/<class>/<file> (a top folder such as cifar10-jpeg/ is optional)
            if split not in parts[:-2]:
                continue
            cls = parts[parts.index(split) + 1]
            per_class.setdefault(cls, [])
            if member.isfile():
                per_class[cls].append((f"{archive}:{member.name}", tar.extractfile(member).read()))
    if not per_class:
        raise EvaError(f"{archive} has no {split}/<class>/ folders")
    for cls, files in sorted(per_class.items()):
        if not files:
            raise EvaError(f"class folder {split}/{cls} in {archive} is empty")
        files.sort()
    return _decode_classes(per_class, channels, size, f"{archive}:{split}")


def _cache_path(source: Path, split: str, channels: int, size: int | None) -> Path:
    """Cache beside the data when that folder is writable, else in the user's cache directory."""
    stat = source.stat()
    key = hashlib.sha1(f"{source.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{split}|{channels}|{size}".encode())
    name = f".{source.name}.{split}.{key.hexdigest()[:12]}.eva-cache.npz"
    # beside the data only where its folder is meant to be written: root passes os.access on a
    # read-only shared copy, so the folder's own write bit is checked too
    parent = source.parent
    if os.access(parent, os.W_OK) and parent.stat().st_mode & stat_mod.S_IWUSR:
        return parent / name
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eva_lightning"
    return cache_home / name


def load_folder_cached(source: Path, split: str, channels: int, size: int | None) -> Split:
    """Decode a folder tree or archive once; later calls read the ``.npz`` cache.

    ``source`` is either the tree root (holding ``train/`` and ``test/``) or a ``.tar.gz`` of it.
    """
    cache = _cache_path(source, split, channels, size)
    if cache.exists():
        with np.load(cache) as z:
            return Split(z["images"], z["labels"], tuple(str(c) for c in z["classes"]))
    if source.is_dir():
        out = read_folder(source / split, channels, size)
    else:
        out = read_folder_archive(source, split, channels, size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=out.images, labels=out.labels, classes=np.asarray(out.classes))
    os.replace(tmp, cache)  # a half-written cache never takes the real name
    log.info("decoded %d images from %s:%s, cached at %s", len(out.labels), source, split, cache)
    return out


def find_folder_source(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first ImageFolder tree (``<name>/train``) or archive (``<name>.tar.gz``) under root; ``""`` is root itself."""
    for name in names:
        tree = root / name if name else root
        if (tree / "train").is_dir():
            return tree
        if not name and root.is_file():
            return root
        for suffix in (".tar.gz", ".tgz", ".tar") if name else ():
            archive = root / f"{name}{suffix}"
            if archive.is_file():
                return archive
    return None


def looked_for(info: DatasetInfo, root: Path) -> list[str]:
    """Where ``info``'s files would be under ``root``, for the "no data found" message."""
    places = [f"{root}/{info.torchvision.looked_for}"] if info.torchvision else []
    for name in info.folders:
        places.append(f"{root}/{name}/{{train,test}}/<class>/* or {root}/{name}.tar.gz (an ImageFolder export)" if name
                      else f"{root}/{{train,test}}/<class>/<images> or a .tar.gz of that tree at {root}")
    return places
