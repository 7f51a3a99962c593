"""torchvision data sets and ImageFolder trees read into in-memory :class:`Split` arrays (trees cached as ``.npz``)."""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import logging
import os
import stat as stat_mod
import struct
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
from PIL import Image, UnidentifiedImageError

from eva_lightning.data.datasets import DatasetInfo, TorchvisionFiles
from eva_lightning.core.errors import EvaError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Split:
    """One split held in memory."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]


def data_missing(info: DatasetInfo, data_dir: Path, download: bool, failure: str | None = None) -> EvaError:
    """The offline error: where ``info``'s files would be and the two ways out (``failure``: a non-network cause)."""
    looked_for = [f"{data_dir}/{info.torchvision.looked_for}"] if info.torchvision else []
    looked_for += [f"{data_dir}/{n}/{{train,test}}/<class>/* or {data_dir}/{n}.tar.gz (an ImageFolder export)" if n
                   else f"{data_dir}/{{train,test}}/<class>/<images> or a .tar.gz of that tree at {data_dir}"
                   for n in info.folders]
    if data_dir.is_file():
        wanted = " or ".join(p.replace(f"{data_dir}/", "") for p in looked_for)
        return EvaError(f"data_dir={data_dir} is a file, not a folder: point --data.data_dir at the folder that "
                        f"holds {wanted}")
    tried = "\n".join(f"  - {p}" for p in looked_for)
    why = ("download is disabled (data.download: false)" if not download
           else f"the download failed: {failure}" if failure else "the download failed (no internet?)")
    # downloading was already on when it failed: the second way out is a connection, not the flag
    second = ("allowing the download on a machine with internet: --data.download true" if not download else
              f"running once on a machine that reaches the internet, or copying the data into {data_dir} as listed "
              "above")
    return EvaError(f"no data found in data_dir={data_dir} and {why}.\nLooked for:\n{tried}\nFix it by either:\n"
                    "  1. pointing at a folder that has the data: --data.data_dir /path/to/data "
                    f"(or export EVA_DATA_DIR=/path/to/data), or\n  2. {second}")


def unwritable(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (made if missing), or None."""
    # a real write answers for every cause at once: permissions, a read-only mount, a file in the way
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"{exc.strerror or exc}: {folder}"
    return None


#: errors of the machine, not of the network, that a download can end in
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST,
                 errno.EIO}


def download_failure(exc: BaseException) -> str | None:
    """The cause of a failed download when it is the machine (disk full, permissions), else None."""
    while exc is not None:
        if isinstance(exc, OSError) and not isinstance(exc, URLError) and exc.errno in _LOCAL_ERRNOS:
            return f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc.strerror)
        exc = exc.__cause__ or exc.__context__
    return None


def torchvision_present(files: TorchvisionFiles, root: Path) -> bool:
    """Whether torchvision's files of both splits are under ``root``."""
    return all((root / marker).exists() for marker in files.markers)


def load_torchvision(files: TorchvisionFiles, root: Path, train: bool, classes: tuple[str, ...] | None = None,
                     download: bool = False) -> Split:
    """Read (and, only when asked, download) a torchvision data set into arrays."""
    from torchvision import datasets

    try:
        ds = getattr(datasets, files.dataset)(str(root), train=train, download=download)
    # a damaged copy ends in whatever torchvision's reader hits (RuntimeError, EOFError, UnpicklingError, ...)
    except Exception as exc:
        if download:
            raise  # the caller tells a failed download apart
        raise damaged(files, root, exc) from None
    images = np.asarray(ds.data, dtype=np.uint8)  # a tensor or an array, by data set; grey ones lack the C axis
    images = np.ascontiguousarray(images[..., None] if images.ndim == 3 else images)
    return Split(images, np.asarray(ds.targets, dtype=np.int64), classes or tuple(ds.classes))


#: bytes per item of each IDX data type code
_IDX_ITEM = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def idx_problem(path: Path) -> str | None:
    """What is wrong with an IDX file (MNIST's format: a header of sizes, then the data), or None."""
    with open(path, "rb") as f:
        data = f.read(4 + 4 * 255)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_ITEM:
        return "not an IDX file"
    ndim, size = data[3], path.stat().st_size
    if len(data) < 4 + 4 * ndim:
        return f"truncated ({size} bytes, shorter than its header)"
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64)) * _IDX_ITEM[data[2]]
    return None if size == expected else f"{size} bytes where its header promises {expected} (truncated or damaged)"


def damaged(files: TorchvisionFiles, root: Path, exc: BaseException) -> EvaError:
    """The error of a torchvision copy that is there but cannot be read: which file, and how to get a good one."""
    problems = []
    for name in files.files:
        path = root / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif name.endswith("-ubyte") and (why := idx_problem(path)):
            problems.append(f"{path} is {why}")
    folder = root / Path(files.markers[0]).parts[0]
    what = "; ".join(problems) if problems else f"a file in {folder} is damaged ({type(exc).__name__}: {exc})"
    return EvaError(f"cannot read {files.dataset} from data_dir={root}: {what}. Delete {folder} and download it "
                    "again (--data.download true), or copy it again from a good copy")


def decode_image(data: bytes | str | Path, name: str, channels: int, size: int | None) -> np.ndarray | None:
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


def class_order(found: set[str], expected: tuple[str, ...] | None, where: str) -> tuple[str, ...]:
    """The class folders in label order: a data set's own classes (which they must be exactly), else sorted."""
    # a stray folder must never become a class: it would shift the labels of every class after it
    if expected is None:
        if not found:
            raise EvaError(f"{where} has no class folders (expected {where}/<class>/<image files>)")
        return tuple(sorted(found))
    extra, missing = sorted(found - set(expected)), [c for c in expected if c not in found]
    if extra or missing:
        wrong = "; ".join([f"extra {extra} (a stray or mistyped folder)"] * bool(extra)
                          + [f"missing {missing}"] * bool(missing))
        raise EvaError(f"the class folders in {where} must be the data set's {len(expected)} classes: {wrong}. "
                       f"Rename or move the folders so that {where} holds exactly {list(expected)}")
    return expected


def _decode_classes(per_class: dict[str, list[tuple[str, bytes | str]]], classes: tuple[str, ...], channels: int,
                    size: int | None, where: str) -> Split:
    """Decode ``{class: [(name, file or bytes), ...]}``, labelled by place in ``classes``; non-images are skipped."""
    for cls in classes:
        if not per_class[cls]:
            raise EvaError(f"class folder {cls} in {where} is empty: add images or remove the folder")
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


def _note_hidden(hidden: list[str], where: object) -> None:
    if hidden:
        log.info("ignoring %d hidden entr%s in %s (names starting with '.', e.g. %s)", len(hidden),
                 "y" if len(hidden) == 1 else "ies", where, hidden[0])


def _files_under(folder: str, out: list[tuple[str, int, int]], hidden: list[str]) -> None:
    """Append ``(path, size, mtime_ns)`` of every file under ``folder``; hidden entries are skipped."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                hidden.append(entry.path)  # .ipynb_checkpoints, .DS_Store: never images of the class
            elif entry.is_dir():
                _files_under(entry.path, out, hidden)
            elif entry.is_file():
                st = entry.stat()
                out.append((entry.path, st.st_size, st.st_mtime_ns))


def list_folder(split_dir: Path) -> dict[str, list[tuple[str, int, int]]]:
    """``{class folder: [(path, size, mtime_ns), ...]}`` of an ImageFolder split, files sorted by path."""
    if not split_dir.is_dir():
        raise EvaError(f"{split_dir.parent} has no {split_dir.name}/ folder: an ImageFolder tree holds "
                       "train/<class>/<images> and test/<class>/<images>")
    per_class: dict[str, list[tuple[str, int, int]]] = {}
    hidden: list[str] = []
    with os.scandir(split_dir) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                hidden.append(entry.path)
            elif entry.is_dir():
                _files_under(entry.path, files := [], hidden)
                per_class[entry.name] = sorted(files)
    _note_hidden(hidden, split_dir)
    return per_class


def class_folders(split_dir: Path) -> tuple[str, ...]:
    """The class folders of an ImageFolder split, sorted (hidden ones are not classes)."""
    return tuple(sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")))


def read_folder_archive(archive: Path, split: str, channels: int, size: int | None,
                        classes: tuple[str, ...] | None = None) -> Split:
    """Decode one split straight out of a ``.tar.gz`` ImageFolder export, without unpacking it."""
    per_class: dict[str, list[tuple[str, bytes]]] = {}
    hidden: list[str] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                # <top>/<split>/<class>/<file> (a top folder such as cifar10-jpeg/ is optional)
                if split not in parts[:-2]:
                    continue
                inside = parts[parts.index(split) + 1:]
                if any(part.startswith(".") for part in inside):
                    hidden.append(member.name)
                    continue
                per_class.setdefault(inside[0], [])
                if member.isfile():
                    per_class[inside[0]].append((f"{archive}:{member.name}", tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        why = str(exc).splitlines()[0].rstrip(":") if str(exc) else ""
        raise EvaError(f"cannot read {archive} as a .tar(.gz) of an ImageFolder tree ({type(exc).__name__}: {why}): "
                       "it is cut short, damaged or not an archive. Copy or download it again, or point "
                       "--data.data_dir at the unpacked tree") from None
    _note_hidden(hidden, archive)
    if not per_class:
        raise EvaError(f"{archive} has no {split}/<class>/ folders")
    where = f"{archive}:{split}"
    order = class_order(set(per_class), classes, where)
    return _decode_classes({c: sorted(files) for c, files in per_class.items()}, order, channels, size, where)


#: bumped when what a cache holds changes, so that older caches are not read
_CACHE_FORMAT = 2


def _cache_dir(source: Path) -> Path:
    """Beside the data when that folder is writable, else the user's cache directory."""
    # root passes os.access on a read-only shared copy, so the folder's own write bit is checked too
    parent = source.parent
    if os.access(parent, os.W_OK) and parent.stat().st_mode & stat_mod.S_IWUSR:
        return parent
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eva_lightning"


def load_folder_cached(source: Path, split: str, channels: int, size: int | None,
                       classes: tuple[str, ...] | None = None) -> Split:
    """Decode a tree (holding ``train/`` and ``test/``) or its ``.tar.gz`` once; later calls read the ``.npz``
    cache while the files are unchanged. ``classes``: the class folders they must be, in label order, or None."""
    settings = hashlib.sha1(f"{_CACHE_FORMAT}|{source.resolve()}|{split}|{channels}|{size}|{classes}".encode())
    prefix = f".{source.name}.{split}.{settings.hexdigest()[:8]}."
    if source.is_dir():
        # keyed on every file it caches (60k stats: well under a second), so a fixed image is read again
        split_dir = source / split
        per_class = list_folder(split_dir)
        order = class_order(set(per_class), classes, str(split_dir))  # a stray folder is refused before decoding
        cut = len(str(split_dir)) + 1  # paths inside the tree: a moved tree keeps its cache's content key
        stamp = "".join(f"{p[cut:]}|{n}|{t}\n" for c in order for p, n, t in per_class[c])
    else:
        st = source.stat()  # an archive is the one file it caches
        stamp = f"{st.st_size}|{st.st_mtime_ns}"
    cache_dir = _cache_dir(source)
    cache = cache_dir / f"{prefix}{hashlib.sha1(stamp.encode()).hexdigest()[:16]}.eva-cache.npz"
    if cache.exists():
        try:
            with np.load(cache) as z:
                return Split(z["images"], z["labels"], tuple(str(c) for c in z["classes"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("decoding %s:%s again: its cache %s cannot be read (%s)", source, split, cache, exc)
    if source.is_dir():
        out = _decode_classes({c: [(p, p) for p, _, _ in per_class[c]] for c in order}, order, channels, size,
                              str(split_dir))
    else:
        out = read_folder_archive(source, split, channels, size, classes)
    tmp = cache.with_suffix(".tmp.npz")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, images=out.images, labels=out.labels, classes=np.asarray(out.classes))
        os.replace(tmp, cache)  # a half-written cache never takes the real name
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("could not cache the decoded %s:%s at %s (%s): it is decoded again next time", source, split,
                    cache, exc)
        return out
    # the same split and settings cached for older files: stale for good, and as large as the data
    for old in cache_dir.glob(f"{glob.escape(prefix)}*.eva-cache.npz"):
        if old != cache:
            old.unlink(missing_ok=True)
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
