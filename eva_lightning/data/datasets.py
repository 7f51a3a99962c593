"""One frozen description per ``data.dataset`` value: all that differs between data sets, so that the data
module and :mod:`~eva_lightning.data.sources` never name one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: the values of ``data.dataset`` (a test keeps it equal to :data:`DATASETS`' keys)
DatasetName = Literal["mnist", "cifar10", "folder"]


@dataclass(frozen=True)
class TorchvisionFiles:
    """A torchvision data set's own files under ``data_dir``."""

    dataset: str  # the torchvision.datasets class name (MNIST)
    markers: tuple[str, ...]  # files that exist once both splits are there
    looked_for: str  # where they are, for the "no data found" message
    files: tuple[str, ...] = ()  # every file torchvision reads, for the "missing or damaged" message


@dataclass(frozen=True)
class DatasetInfo:
    """One data set: what the model needs from it and where its images come from (None: read from the data)."""

    name: DatasetName
    channels: int | None = None  # None: data.channels decides
    image_size: int | None = None  # side of the square images; None: data.image_size or the files decide
    mean: tuple[float, ...] | None = None  # per channel, of the training split's pixels in [0, 1]
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None  # in label order; None: the tree's class folders, sorted
    torchvision: TorchvisionFiles | None = None  # read (and downloaded) through torchvision.datasets
    # ImageFolder exports under data_dir: <name>/{train,test}/<class>/* or <name>.tar.gz; "" is data_dir itself
    folders: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether a model's input is known without reading any images (e.g. to predict your own)."""
        return None not in (self.channels, self.image_size, self.mean, self.std, self.classes)


MNIST = DatasetInfo(
    name="mnist", channels=1, image_size=28, mean=(0.1307,), std=(0.3081,),
    classes=tuple(str(i) for i in range(10)),
    torchvision=TorchvisionFiles("MNIST", ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-images-idx3-ubyte"),
                                 "MNIST/raw/*-ubyte (torchvision's MNIST files)",
                                 tuple(f"MNIST/raw/{s}-{k}" for s in ("train", "t10k")
                                       for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))),
)
CIFAR10 = DatasetInfo(
    name="cifar10", channels=3, image_size=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    torchvision=TorchvisionFiles("CIFAR10", ("cifar-10-batches-py/data_batch_1",),
                                 "cifar-10-batches-py (torchvision's CIFAR-10 files)",
                                 tuple(f"cifar-10-batches-py/{f}" for f in (
                                     *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"))),
    folders=("cifar10-jpeg", "cifar10"),
)
#: any ImageFolder tree at ``data_dir``: everything is read from it (or from ``data.*``)
FOLDER = DatasetInfo(name="folder", folders=("",))

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (MNIST, CIFAR10, FOLDER)}
