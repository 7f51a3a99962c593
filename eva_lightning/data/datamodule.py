"""VisionDataModule: MNIST, CIFAR-10 or any ImageFolder tree, with albumentations pipelines."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Literal, Sequence

import albumentations as A
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eva_lightning.data import sources
from eva_lightning.data.batch_augment import BatchAugment, BatchedSplit, Unsupported
from eva_lightning.data.datasets import DATASETS, DatasetName
from eva_lightning.data.resumable import ResumableLoader, ResumableShuffle
from eva_lightning.data.transforms import TransformSpec, build_pipeline, build_transform
from eva_lightning.core.errors import EvaError

log = logging.getLogger(__name__)

#: the test split is read in one fixed shuffled order, the same for every run seed
EVALUATION_ORDER_SEED = 0


def _draw_seed() -> int:
    """A seed from torch's global RNG: what ``seed_everything`` seeds and a resumed run restores."""
    return int(torch.randint(2**62, ()))


class ImageSplit(Dataset):
    """A split as uint8 (N, H, W, C) images and labels, and the pipeline it goes through.

    With ``augment`` (``data.loader: batched``) items are indices that :meth:`gather_batch` gathers and augments on the
    device, else ``(pipeline(image), label)``. A ``reseed`` split (training) draws a seed from torch's RNG
    every batch: the stream ``seed_everything`` set and resuming restores (each worker has its own RNG).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, pipeline: A.Compose,
                 augment: BatchAugment | None = None, reseed: bool = False) -> None:
        self.images = torch.from_numpy(np.require(images, np.uint8, ["C", "W"]))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.pipeline, self.augment, self.reseed = pipeline, augment, reseed
        self.rank = 0  # added to each drawn seed: DDP ranks share torch's seed, not their augmentations
        self._seed_pipeline(torch.initial_seed())
        self.batched = BatchedSplit(self.images, self.labels, augment) if augment is not None else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.augment is not None:
            return i
        return self.pipeline(image=self.images[i].numpy())["image"], self.labels[i]

    def __getitems__(self, idx: list[int]) -> list:
        if self.augment is not None:
            return idx  # default_collate makes them one int64 tensor
        if self.reseed:
            self._seed_pipeline(_draw_seed() + self.rank)
        return [self[i] for i in idx]

    def _seed_pipeline(self, seed: int) -> None:
        # one stream shared by the transforms (Compose.set_random_seed gives each the same seed,
        # so that e.g. a flip's and a rotation's coin tosses would come out alike)
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def gather_batch(self, batch):
        """An index batch -> ``(augmented float images, labels)`` on its device; other batches as they are."""
        if self.batched is None or not isinstance(batch, torch.Tensor):
            return batch
        return self.batched(batch, _draw_seed() + self.rank if self.reseed and self.augment.random else None)


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
        seed: seed of the validation split carved out of train (shuffling and augmentation
            follow the run's seed, ``seed_everything``).
        val_split: the part of train held out as validation: a fraction (< 1) or a number of images
            (>= 1, e.g. 5000); 0 validates on the test split, as the assignments do.
        train_transforms: albumentations pipeline for training, ``[{name: ..., args...}]``.
        test_transforms: pipeline for validation/test/predict (never augmented).
        image_size: for ``folder``: resize every image to this square size.
        channels: for ``folder``: 1 (grey) or 3 (RGB).
        mean: per-channel mean for normalisation; default the data set's own.
        std: per-channel std; default the data set's own.
        predict_dir: folder of your own images for ``eva predict`` (any size, grey or colour).
        loader: ``torch``: albumentations per sample in the DataLoader (``num_workers``), or ``batched``: the
            split held on the training device (CPU or GPU), augmented there a batch at a time
            (``data.batch_augment``); a pipeline without a batched version falls back to ``torch`` for that split,
            saying why. ``gpu``, its former name, still works and says so.
    """

    def __init__(
        self,
        dataset: DatasetName = "mnist",
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
        loader: Literal["torch", "batched", "gpu"] = "torch",
    ) -> None:
        super().__init__()
        if not (0.0 <= val_split < 1.0 or val_split == int(val_split) >= 1):
            raise EvaError(f"data.val_split={val_split} is impossible: give a fraction in [0, 1) of the training set "
                           "(0.1) or a whole number of its images (5000)")
        if batch_size < 1:
            raise EvaError(f"data.batch_size={batch_size} is impossible: use at least 1 (e.g. --data.batch_size 128)")
        if num_workers < 0:
            raise EvaError(f"data.num_workers={num_workers} is impossible: use 0 (load in the main process) or more")
        if image_size is not None and image_size < 1:
            raise EvaError(f"data.image_size={image_size} is impossible: use a side of at least 1 pixel, or leave it unset")
        if std is not None and not all(s > 0 for s in std):
            raise EvaError(f"data.std={list(std)} is impossible: every channel's std must be > 0, or leave it unset")
        for specs in (train_transforms, test_transforms):  # an unknown name or argument fails here, not mid-epoch
            for spec in specs or ():
                build_transform(spec)
        self.save_hyperparameters()
        self.dataset, self.download, self.info = dataset, download, DATASETS[dataset]
        self.data_dir = Path(data_dir or os.environ.get("EVA_DATA_DIR") or "data").expanduser()
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.seed, self.val_split = seed, val_split
        self.train_specs, self.test_specs = train_transforms, test_transforms
        self.in_channels: int = self.info.channels or channels
        self._mean = tuple(mean) if mean is not None else self.info.mean
        self._std = tuple(std) if std is not None else self.info.std
        self._classes: tuple[str, ...] | None = self.info.classes
        if loader == "gpu":  # the value's former name (it batches on the CPU too); old configs and checkpoints keep it
            log.warning("data.loader: gpu is now called data.loader: batched (it batches on whatever device "
                        "trains, the CPU included); write batched in your config, gpu will go")
            loader = "batched"
        self.predict_dir, self.loader = Path(predict_dir).expanduser() if predict_dir else None, loader
        self.predict_files: list[Path] = []  # the readable images, in prediction order
        self.predict_skipped: list[Path] = []  # files that could not be read as images
        self.train_set = self.val_set = self.test_set = self.predict_set = None
        self._splits: dict[str, sources.Split] = {}

    # ------------------------------------------------------------------ what the model needs
    @property
    def classes(self) -> tuple[str, ...]:
        if self._classes is None:
            if (source := self._folder_source()) is None:
                raise self._missing(download=False)
            self._classes = self._load("train").classes if source.is_file() else sources.class_folders(source / "train")
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
        return sources.find_folder_source(self.data_dir, self.info.folders)

    def _missing(self, download: bool, failure: str | None = None) -> EvaError:
        return sources.data_missing(self.info, self.data_dir, download, failure)

    def _local_kind(self) -> str | None:
        files = self.info.torchvision
        if files is not None and sources.torchvision_present(files, self.data_dir):
            return "torchvision"
        return "folder" if self._folder_source() is not None else None

    def prepare_data(self) -> None:
        """Download (rank 0 only) when nothing is found locally and downloads are allowed."""
        if self.trainer is not None and self.trainer.predicting and self.info.known:
            return  # predicting own images needs only the known statistics and sizes, no data set
        if self._local_kind() is not None:
            return
        if not self.download or self.info.torchvision is None or self.data_dir.is_file():
            raise self._missing(download=False)
        if problem := sources.unwritable(self.data_dir):
            raise EvaError(f"no {self.dataset} data in data_dir={self.data_dir}, and it cannot be downloaded there: "
                           f"{problem}. Point --data.data_dir at a folder that has the data or that you can write to "
                           "(or export EVA_DATA_DIR=/path/to/data)")
        try:
            for train in (True, False):
                sources.load_torchvision(self.info.torchvision, self.data_dir, train, download=True)
        except Exception as exc:  # torchvision raises URLError/RuntimeError/OSError when offline
            log.debug("download failed: %r", exc)
            raise self._missing(download=True, failure=sources.download_failure(exc)) from None

    def _load(self, split: Literal["train", "test"]) -> sources.Split:
        if split not in self._splits:
            kind = self._local_kind()
            if kind == "torchvision":
                out = sources.load_torchvision(self.info.torchvision, self.data_dir, split == "train", self.info.classes)
            elif kind == "folder":
                # a data set of known size is read as it is stored (its decoded cache stays valid)
                size = self.hparams.image_size if self.info.image_size is None else None
                out = sources.load_folder_cached(self._folder_source(), split, self.in_channels, size,
                                                 self.info.classes)
            else:
                raise self._missing(self.download)
            if self.info.classes is None and self._classes is not None and out.classes != self._classes:
                raise EvaError(f"train and test class folders differ in {self.data_dir}: "
                               f"{sorted(set(out.classes) ^ set(self._classes))} appear in only one of them")
            self._classes = self._classes or out.classes
            if split == "test":
                # stored class by class (as an ImageFolder export is), the first batches would hold one class;
                # shuffled once, any prefix (limit_val_batches) is a fair sample and full-split metrics stay
                order = np.random.default_rng(EVALUATION_ORDER_SEED).permutation(len(out.labels))
                out = sources.Split(out.images[order], out.labels[order], out.classes)
            self._splits[split] = out
        return self._splits[split]

    def _fit_folder_stats(self) -> None:
        x = self._load("train").images.astype(np.float64) / 255.0
        self._mean = tuple(float(v) for v in x.mean(axis=(0, 1, 2)))
        self._std = tuple(float(v) for v in x.std(axis=(0, 1, 2)))

    # ------------------------------------------------------------------ splits and loaders
    def _dataset(self, split: sources.Split, specs, idx: np.ndarray | None = None, train: bool = False) -> ImageSplit:
        images, labels = (split.images, split.labels) if idx is None else (split.images[idx], split.labels[idx])
        pipeline = build_pipeline(specs, self.mean, self.std)
        augment = None
        if self.loader == "batched":
            try:
                augment = BatchAugment(pipeline)
            except Unsupported as exc:
                log.warning("data.loader=batched cannot batch %s: this split takes the DataLoader path "
                            "(albumentations per sample, data.num_workers=%d)", exc, self.num_workers)
        return ImageSplit(images, labels, pipeline, augment, reseed=train)

    @property
    def image_size(self) -> int:
        """Side of the square model input."""
        return self.info.image_size or self.hparams.image_size or self._load("train").images.shape[1]

    def _setup_predict(self) -> None:
        if self.predict_dir is None or not self.predict_dir.is_dir():
            raise EvaError(f"data.predict_dir={self.predict_dir} is not a folder: point it at a folder of images")
        files = sorted(p for p in self.predict_dir.rglob("*") if p.is_file())
        decoded = {p: sources.decode_image(p, str(p), self.in_channels, self.image_size) for p in files}
        self.predict_files = [p for p, arr in decoded.items() if arr is not None]
        self.predict_skipped = [p for p, arr in decoded.items() if arr is None]
        images = [decoded[p] for p in self.predict_files]
        if not images:
            raise EvaError(f"no readable images in data.predict_dir={self.predict_dir}")
        labels = np.full(len(images), -1, dtype=np.int64)  # unknown
        self.predict_set = ImageSplit(np.stack(images), labels, build_pipeline(self.test_specs, self.mean, self.std))

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self._setup_predict()
            return
        train = self._load("train")
        if stage in ("fit", "validate", None) and self.train_set is None:
            if self.val_split > 0:
                perm = np.random.default_rng(self.seed).permutation(len(train.labels))
                n_val = int(self.val_split) if self.val_split >= 1 else int(round(self.val_split * len(perm)))
                if n_val >= len(perm):
                    raise EvaError(f"data.val_split={self.val_split:g} holds out every one of the {len(perm)} training "
                                   "images: hold out fewer (e.g. a tenth of them) so that some remain to train on")
                self.train_set = self._dataset(train, self.train_specs, np.sort(perm[n_val:]), train=True)
                self.val_set = self._dataset(train, self.test_specs, perm[:n_val])  # shuffled: a fair prefix
            else:
                self.train_set = self._dataset(train, self.train_specs, train=True)
                self.val_set = self._dataset(self._load("test"), self.test_specs)
        if stage in ("test", "validate", None) and self.test_set is None:
            self.test_set = self._dataset(self._load("test"), self.test_specs)
            if self.val_set is None:
                self.val_set = self.test_set

    def _loader(self, split: ImageSplit, shuffle: bool = False) -> DataLoader:
        if self.trainer is not None:
            split.rank = self.trainer.global_rank
        per_sample = split.augment is None  # index batches need no workers and no pinned memory
        workers = self.num_workers if per_sample else 0
        options = dict(batch_size=self.batch_size, num_workers=workers, pin_memory=self.pin_memory and per_sample,
                       persistent_workers=workers > 0)
        if shuffle:  # training: a preempted run's checkpoint records its place in the epoch
            return ResumableLoader(split, sampler=ResumableShuffle(split), **options)
        return DataLoader(split, **options)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Index batches of a batched split become augmented images here, on the device (Lightning's recipe)."""
        t = self.trainer
        return (self.train_set if t.training else self.test_set if t.testing
                else self.predict_set if t.predicting else self.val_set).gather_batch(batch)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set)
