"""VisionDataModule: MNIST, CIFAR-10 or any ImageFolder tree, with albumentations pipelines."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eva_lightning.data import gpu_loader, sources
from eva_lightning.data.transforms import TransformSpec, build_pipeline, is_plain
from eva_lightning.errors import EvaError

log = logging.getLogger(__name__)

# name -> (channels, mean, std); statistics of the training split.
KNOWN = {
    "mnist": (1, (0.1307,), (0.3081,)),
    "cifar10": (3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
FOLDER_NAMES = {"mnist": (), "cifar10": ("cifar10-jpeg", "cifar10"), "folder": ()}


class ArrayDataset(Dataset):
    """uint8 (N, H, W, C) images through an albumentations pipeline, one sample at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, torch.from_numpy(labels), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(image=self.images[i])["image"], self.labels[i]


class NormalizedDataset(Dataset):
    """The fast path for a pipeline that only normalises: the whole split as one float tensor.

    Normalising per sample through albumentations costs more than the small nets' forward pass
    on a CPU; done once here it costs nothing per epoch and gives identical values.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std) -> None:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        self.images = x.sub_(m).div_(s).contiguous()
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]

    def __getitems__(self, idx: list[int]):  # one gather per batch instead of N single-item reads
        idx_t = torch.as_tensor(idx)
        return self.images[idx_t], self.labels[idx_t]


def _seed_worker_pipeline(worker_id: int) -> None:
    """Give each DataLoader worker its own albumentations stream.

    albumentations 2.x draws from the Compose's own generator, which every worker would inherit
    unchanged (the same augmentations in each worker) and which ``seed_everything`` does not
    reach; the worker's torch seed (the seeded main process's base seed + worker id) is both
    distinct per worker and reproducible.
    """
    info = torch.utils.data.get_worker_info()
    if isinstance(info.dataset, ArrayDataset):
        info.dataset.transform.set_random_seed(info.seed % 2**32)


def _already_batched(batch):
    """collate_fn for NormalizedDataset, whose __getitems__ returns the finished batch."""
    return batch


class VisionDataModule(L.LightningDataModule):
    """One data module for MNIST, CIFAR-10 and ImageFolder trees.

    Args:
        dataset: ``mnist``, ``cifar10`` or ``folder`` (an ImageFolder tree with ``train/`` and
            ``test/``, or that tree as ``.tar.gz``, at ``data_dir``).
        data_dir: where the data lives; default ``$EVA_DATA_DIR``, else ``data``.
        download: let torchvision download MNIST/CIFAR-10 when nothing is found locally.
        batch_size: samples per batch (training and evaluation).
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory (speeds copies to a GPU).
        seed: seed of the validation split carved out of train.
        val_split: fraction of train held out as validation; 0 uses the test split, as the
            assignments do.
        train_transforms: albumentations pipeline for training, ``[{name: ..., args...}]``.
        test_transforms: pipeline for validation/test/predict (never augmented).
        image_size: for ``folder``: resize every image to this square size.
        channels: for ``folder``: 1 (grey) or 3 (RGB).
        mean: per-channel mean for normalisation; default the data set's own.
        std: per-channel std; default the data set's own.
        predict_dir: folder of your own images for ``eva predict`` (any size, grey or colour;
            converted to the model's input with the test pipeline).
        loader: ``torch`` (DataLoader + albumentations per sample) or ``gpu``: the split as uint8
            on the training device, augmented per batch there (``eva_lightning.data.gpu_loader``);
            a pipeline it cannot reproduce falls back to ``torch`` with a logged reason.
    """

    def __init__(
        self,
        dataset: Literal["mnist", "cifar10", "folder"] = "mnist",
        data_dir: str | None = None,
        download: bool = True,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 1,
        val_split: float = 0.0,
        train_transforms: list[TransformSpec] | None = None,
        test_transforms: list[TransformSpec] | None = None,
        image_size: int | None = None,
        channels: Literal[1, 3] = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        predict_dir: str | None = None,
        loader: Literal["torch", "gpu"] = "torch",
    ) -> None:
        super().__init__()
        if not 0.0 <= val_split < 1.0:
            raise EvaError(f"data.val_split must be in [0, 1), got {val_split}")
        if batch_size < 1:
            raise EvaError(f"data.batch_size={batch_size} is impossible: use at least 1 (e.g. --data.batch_size 128)")
        if num_workers < 0:
            raise EvaError(f"data.num_workers={num_workers} is impossible: use 0 (load in the main process) or more")
        if image_size is not None and image_size < 1:
            raise EvaError(f"data.image_size={image_size} is impossible: use a side of at least 1 pixel, or leave it unset")
        if std is not None and not all(s > 0 for s in std):
            raise EvaError(f"data.std={list(std)} is impossible: every channel's std must be > 0, or leave it unset")
        self.save_hyperparameters()
        self.dataset = dataset
        self.data_dir = Path(data_dir or os.environ.get("EVA_DATA_DIR") or "data").expanduser()
        self.download = download
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.val_split = val_split
        self.train_specs = train_transforms
        self.test_specs = test_transforms
        self._channels = KNOWN[dataset][0] if dataset in KNOWN else channels
        self._mean = tuple(mean) if mean is not None else (KNOWN[dataset][1] if dataset in KNOWN else None)
        self._std = tuple(std) if std is not None else (KNOWN[dataset][2] if dataset in KNOWN else None)
        self._classes: tuple[str, ...] | None = sources.MNIST_CLASSES if dataset == "mnist" else (
            sources.CIFAR10_CLASSES if dataset == "cifar10" else None
        )
        self.predict_dir = Path(predict_dir).expanduser() if predict_dir else None
        self.loader = loader
        self.predict_files: list[Path] = []  # the readable images, in prediction order
        self.predict_skipped: list[Path] = []  # files that could not be read as images
        self.train_set = self.val_set = self.test_set = self.predict_set = None
        self._splits: dict[str, sources.Split] = {}

    # ------------------------------------------------------------------ what the model needs
    @property
    def in_channels(self) -> int:
        return self._channels

    @property
    def classes(self) -> tuple[str, ...]:
        if self._classes is None:
            self._classes = self._folder_classes()
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mean(self) -> tuple[float, ...]:
        if self._mean is None:
            self._fit_folder_stats()
        return self._mean

    @property
    def std(self) -> tuple[float, ...]:
        if self._std is None:
            self._fit_folder_stats()
        return self._std

    # ------------------------------------------------------------------ finding the data
    def _folder_source(self) -> Path | None:
        if self.dataset == "folder":
            root = self.data_dir
            if (root / "train").is_dir():
                return root
            return root if root.is_file() else None
        return sources.find_folder_source(self.data_dir, FOLDER_NAMES[self.dataset])

    def _looked_for(self) -> list[str]:
        d = self.data_dir
        if self.dataset == "mnist":
            return [f"{d}/MNIST/raw/*-ubyte (torchvision's MNIST files)"]
        if self.dataset == "cifar10":
            return [
                f"{d}/cifar-10-batches-py (torchvision's CIFAR-10 files)",
                f"{d}/cifar10-jpeg/{{train,test}}/<class>/* or {d}/cifar10-jpeg.tar.gz (an ImageFolder export)",
            ]
        return [f"{d}/{{train,test}}/<class>/<images> or a .tar.gz of that tree at {d}"]

    def _local_kind(self) -> str | None:
        if self.dataset == "mnist" and sources.mnist_present(self.data_dir):
            return "torchvision"
        if self.dataset == "cifar10" and sources.cifar10_present(self.data_dir):
            return "torchvision"
        if self._folder_source() is not None:
            return "folder"
        return None

    def _folder_classes(self) -> tuple[str, ...]:
        source = self._folder_source()
        if source is None:
            raise sources.data_missing(self.data_dir, self._looked_for(), download=False)
        return self._load("train").classes if source.is_file() else tuple(
            sorted(d.name for d in (source / "train").iterdir() if d.is_dir())
        )

    def prepare_data(self) -> None:
        """Download (rank 0 only) when nothing is found locally and downloads are allowed."""
        if self.trainer is not None and self.trainer.predicting and self.dataset in KNOWN:
            return  # predicting own images needs only the known statistics and sizes, no data set
        if self._local_kind() is not None:
            return
        if not self.download or self.dataset == "folder":
            raise sources.data_missing(self.data_dir, self._looked_for(), download=False)
        try:
            for train in (True, False):
                sources.load_torchvision(self.dataset, self.data_dir, train, download=True)
        except Exception as exc:  # torchvision raises URLError/RuntimeError/OSError when offline
            log.debug("download failed: %r", exc)
            raise sources.data_missing(self.data_dir, self._looked_for(), download=True) from None

    def _load(self, split: Literal["train", "test"]) -> sources.Split:
        if split not in self._splits:
            kind = self._local_kind()
            if kind == "torchvision":
                out = sources.load_torchvision(self.dataset, self.data_dir, split == "train")
            elif kind == "folder":
                size = self.hparams.image_size if self.dataset == "folder" else None
                out = sources.load_folder_cached(self._folder_source(), split, self._channels, size)
            else:
                raise sources.data_missing(self.data_dir, self._looked_for(), self.download)
            if self._classes is not None and self.dataset == "folder" and out.classes != self._classes:
                raise EvaError(
                    f"train and test class folders differ in {self.data_dir}: "
                    f"{sorted(set(out.classes) ^ set(self._classes))} appear in only one of them"
                )
            self._classes = self._classes or out.classes
            self._splits[split] = out
        return self._splits[split]

    def _fit_folder_stats(self) -> None:
        x = self._load("train").images.astype(np.float64) / 255.0
        self._mean = tuple(float(v) for v in x.mean(axis=(0, 1, 2)))
        self._std = tuple(float(v) for v in x.std(axis=(0, 1, 2)))

    # ------------------------------------------------------------------ splits and loaders
    def _dataset(self, split: sources.Split, specs, idx: np.ndarray | None = None) -> Dataset:
        images, labels = (split.images, split.labels) if idx is None else (split.images[idx], split.labels[idx])
        if self.loader == "gpu":
            try:
                augment = gpu_loader.BatchAugment(build_pipeline(specs, self.mean, self.std))
                return gpu_loader.DeviceDataset(images, labels, augment)
            except gpu_loader.Unsupported as exc:
                log.warning("data.loader=gpu cannot do %s on the device: using the DataLoader path for this split", exc)
        if is_plain(specs):
            return NormalizedDataset(images, labels, self.mean, self.std)
        # seeded from torch's seed, so `seed_everything` decides the augmentations too
        seed = torch.initial_seed() % 2**32
        return ArrayDataset(images, labels, build_pipeline(specs, self.mean, self.std, seed=seed))

    @property
    def image_size(self) -> int:
        """Side of the square model input."""
        if self.dataset == "mnist":
            return 28
        if self.dataset == "cifar10":
            return 32
        return self.hparams.image_size or self._load("train").images.shape[1]

    def _setup_predict(self) -> None:
        if self.predict_dir is None or not self.predict_dir.is_dir():
            raise EvaError(f"data.predict_dir={self.predict_dir} is not a folder: point it at a folder of images")
        files = sorted(p for p in self.predict_dir.rglob("*") if p.is_file())
        images = []
        self.predict_files, self.predict_skipped = [], []
        for path in files:
            arr = sources.decode_image(path, str(path), self._channels, self.image_size)
            (self.predict_skipped if arr is None else self.predict_files).append(path)
            if arr is not None:
                images.append(arr)
        if not images:
            raise EvaError(f"no readable images in data.predict_dir={self.predict_dir}")
        labels = np.full(len(images), -1, dtype=np.int64)  # unknown
        self.predict_set = ArrayDataset(np.stack(images), labels, build_pipeline(self.test_specs, self.mean, self.std))

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self._setup_predict()
            return
        train = self._load("train")
        if stage in ("fit", "validate", None) and self.train_set is None:
            if self.val_split > 0:
                perm = np.random.default_rng(self.seed).permutation(len(train.labels))
                n_val = int(round(self.val_split * len(perm)))
                self.train_set = self._dataset(train, self.train_specs, np.sort(perm[n_val:]))
                self.val_set = self._dataset(train, self.test_specs, np.sort(perm[:n_val]))
            else:
                self.train_set = self._dataset(train, self.train_specs)
                self.val_set = self._dataset(self._load("test"), self.test_specs)
        if stage in ("test", "validate", None) and self.test_set is None:
            self.test_set = self._dataset(self._load("test"), self.test_specs)
            if self.val_set is None:
                self.val_set = self.test_set

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        if isinstance(ds, gpu_loader.DeviceDataset):
            return self._device_loader(ds, shuffle)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=_already_batched if isinstance(ds, NormalizedDataset) else None,
            worker_init_fn=_seed_worker_pipeline,
        )

    def _device_loader(self, ds: gpu_loader.DeviceDataset, shuffle: bool) -> gpu_loader.DeviceLoader:
        """Batches made on the trainer's device (the model is there before loaders are requested)."""
        trainer = self.trainer
        module = trainer.lightning_module if trainer is not None else None
        return gpu_loader.DeviceLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            device=trainer.strategy.root_device if trainer is not None else "cpu",
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            channels_last=bool(getattr(module, "channels_last", False)),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, shuffle=False)
