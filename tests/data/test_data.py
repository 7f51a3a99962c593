"""VisionDataModule on tiny synthetic data in the real on-disk formats."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from conftest import tar_tree, write_cifar_jpeg, write_folder
from eva_lightning.data import VisionDataModule, sources
from eva_lightning.data.datamodule import EVALUATION_ORDER_SEED
from eva_lightning.data.datasets import DATASETS, DatasetName
from eva_lightning.core.errors import EvaError


def test_each_data_set_value_has_one_description():
    assert tuple(DATASETS) == get_args(DatasetName)  # data.dataset's choices are the descriptions
    assert all(info.name == name for name, info in DATASETS.items())


def _raw_mnist(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    raw = root / "MNIST" / "raw"
    x = np.frombuffer((raw / f"{prefix}-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(-1, 28, 28)
    y = np.frombuffer((raw / f"{prefix}-labels-idx1-ubyte").read_bytes()[8:], np.uint8)
    return x, y


def test_mnist_idx_shapes_labels_and_normalisation(mnist_dir):
    dm = VisionDataModule("mnist", data_dir=str(mnist_dir), download=False, batch_size=16)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 28)
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))  # val = test split, in the fixed evaluation order
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw_x, raw_y = _raw_mnist(mnist_dir, "t10k")
    first = np.random.default_rng(EVALUATION_ORDER_SEED).permutation(len(raw_y))[:16]
    expected = (raw_x[first, None].astype(np.float32) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), raw_y[first])
    assert len(dm.train_set) == 256 and len(dm.val_set) == 128


def test_an_identity_transform_before_normalize_changes_nothing(mnist_dir):
    """The default test pipeline (Normalize) and one with a 0-degree rotation first give the same tensor: MNIST's
    (x/255 - 0.1307)/0.3081 (a rotation that resampled or shifted the image would not)."""
    plain = VisionDataModule("mnist", data_dir=str(mnist_dir), download=False)
    rotated = VisionDataModule(
        "mnist", data_dir=str(mnist_dir), download=False,
        test_transforms=[{"name": "Rotate", "limit": 0, "p": 1.0}, {"name": "Normalize"}],
    )
    for dm in (plain, rotated):
        dm.setup("test")
    raw = plain.test_set.images[3].numpy().astype(np.float32)
    expected = (raw.transpose(2, 0, 1) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(plain.test_set[3][0].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(rotated.test_set[3][0].numpy(), expected, atol=1e-5)


def test_folder_labels_follow_sorted_class_names(folder_dir):
    dm = VisionDataModule("folder", data_dir=str(folder_dir), download=False, batch_size=8)
    assert dm.classes == ("cat", "dog", "frog") and dm.num_classes == 3
    dm.setup("fit")
    labels = dm.train_set.labels.numpy() if hasattr(dm.train_set, "labels") else None
    np.testing.assert_array_equal(np.bincount(labels), [12, 12, 12])
    assert labels[0] == 0 and labels[-1] == 2
    x, _ = dm.train_set[0]
    assert x.shape == (3, 32, 32)


def test_folder_is_decoded_once_and_cached(folder_dir, monkeypatch):
    VisionDataModule("folder", data_dir=str(folder_dir)).setup("fit")
    assert list(folder_dir.parent.glob("*.eva-cache.npz")), "no cache written beside the data"

    def no_decoding(*a, **k):
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(sources, "decode_image", no_decoding)
    dm = VisionDataModule("folder", data_dir=str(folder_dir))
    dm.setup("fit")
    assert len(dm.train_set) == 36


def test_folder_archive_reads_like_the_tree(tmp_path):
    tree = write_folder(tmp_path / "shapes")
    archive = tar_tree(tree, tmp_path / "shapes.tar.gz")
    a = VisionDataModule("folder", data_dir=str(tree))
    b = VisionDataModule("folder", data_dir=str(archive))
    a.setup("fit"), b.setup("fit")
    assert a.classes == b.classes
    np.testing.assert_array_equal(a._load("train").images, b._load("train").images)


@pytest.mark.parametrize("archived", [False, True])
def test_cifar10_from_jpeg_export(tmp_path, archived):
    root = write_cifar_jpeg(tmp_path / "data")
    if archived:
        tar_tree(root / "cifar10-jpeg", root / "cifar10-jpeg.tar.gz")
        import shutil

        shutil.rmtree(root / "cifar10-jpeg")
    dm = VisionDataModule("cifar10", data_dir=str(root), download=False, batch_size=10)
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (10, 3, 32, 32) and dm.classes[0] == "airplane" and len(dm.train_set) == 80


def test_validation_split_is_seeded_and_never_augmented(mnist_dir):
    flip = [{"name": "HorizontalFlip", "p": 1.0}, {"name": "Normalize"}]
    dm = VisionDataModule("mnist", data_dir=str(mnist_dir), val_split=0.25, seed=3, train_transforms=flip)
    dm.setup("fit")
    assert len(dm.val_set) == 64 and len(dm.train_set) == 192
    again = VisionDataModule("mnist", data_dir=str(mnist_dir), val_split=0.25, seed=3, train_transforms=flip)
    again.setup("fit")
    np.testing.assert_array_equal(dm.val_set.labels.numpy(), again.val_set.labels.numpy())
    # validation: the un-augmented, normalised image of a train sample
    raw_x, _ = _raw_mnist(mnist_dir, "train")
    perm = np.random.default_rng(3).permutation(256)
    first_val = perm[0]  # validation keeps the drawn order: any prefix is a fair sample
    expected = (raw_x[first_val].astype(np.float32) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(dm.val_set[0][0][0].numpy(), expected, atol=1e-5)
    # training samples really are flipped
    first_train = np.sort(perm[64:])[0]
    flipped = (raw_x[first_train, :, ::-1].astype(np.float32) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(dm.train_set[0][0][0].numpy(), flipped, atol=1e-5)


def test_validation_split_as_an_image_count_is_the_fraction_it_equals(mnist_dir):
    """``data.val_split: 64`` holds out the same 64 images as ``0.25`` of the 256 (issue #28: 5000 of MNIST's 60,000)."""
    by_count = VisionDataModule("mnist", data_dir=str(mnist_dir), val_split=64, seed=3)
    by_fraction = VisionDataModule("mnist", data_dir=str(mnist_dir), val_split=0.25, seed=3)
    for dm in (by_count, by_fraction):
        dm.setup("fit")
    assert len(by_count.val_set) == 64 and len(by_count.train_set) == 192
    np.testing.assert_array_equal(by_count.val_set.labels.numpy(), by_fraction.val_set.labels.numpy())


@pytest.mark.parametrize("val_split", [-0.1, 1.5, 256, 1000])
def test_impossible_validation_split_is_refused_with_the_fix(mnist_dir, val_split):
    with pytest.raises(EvaError, match=r"data\.val_split=.*(fraction|fewer)"):
        dm = VisionDataModule("mnist", data_dir=str(mnist_dir), val_split=val_split)
        dm.setup("fit")


def test_offline_without_data_names_data_dir_and_fixes(tmp_path):
    dm = VisionDataModule("mnist", data_dir=str(tmp_path / "empty"), download=False)
    with pytest.raises(EvaError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and "--data.data_dir" in msg and "EVA_DATA_DIR" in msg
    assert "--data.download true" in msg and "MNIST/raw" in msg


def test_failed_download_gives_the_same_clear_error(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(sources, "load_torchvision", offline)
    dm = VisionDataModule("cifar10", data_dir=str(tmp_path), download=True)
    with pytest.raises(EvaError, match="download failed") as err:
        dm.prepare_data()
    assert "cifar10-jpeg" in str(err.value) and str(tmp_path) in str(err.value)


def test_data_dir_defaults_to_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EVA_DATA_DIR", str(tmp_path))
    assert VisionDataModule().data_dir == tmp_path
    monkeypatch.delenv("EVA_DATA_DIR")
    assert VisionDataModule().data_dir == Path("data")


def test_augmentations_follow_the_torch_seed_and_differ_per_worker(mnist_dir):
    flip = [{"name": "Rotate", "limit": 30, "p": 1.0}, {"name": "Normalize"}]

    def first_batch(seed: int, workers: int = 0) -> torch.Tensor:
        torch.manual_seed(seed)
        dm = VisionDataModule("mnist", data_dir=str(mnist_dir), batch_size=4, train_transforms=flip, num_workers=workers)
        dm.setup("fit")
        torch.manual_seed(seed)
        return next(iter(dm.train_dataloader()))[0]

    assert torch.equal(first_batch(5), first_batch(5))
    assert not torch.equal(first_batch(5), first_batch(6))
    # two workers: each draws its own rotations (not copies of one generator)
    dm = VisionDataModule("mnist", data_dir=str(mnist_dir), batch_size=1, train_transforms=flip, num_workers=2)
    dm.setup("fit")
    dm.train_set.images[:] = dm.train_set.images[0]  # every sample the same image
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=1, num_workers=2,
                                         worker_init_fn=dm.train_dataloader().worker_init_fn)
    a, b = [x for x, _ in list(loader)[:2]]  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(a, b)


def test_predicting_known_data_sets_needs_no_training_data(tmp_path):
    """`eva predict` with a committed checkpoint works on a fresh clone without MNIST downloaded."""
    from types import SimpleNamespace

    dm = VisionDataModule("mnist", data_dir=str(tmp_path / "none"), download=False)
    dm.trainer = SimpleNamespace(predicting=True)
    dm.prepare_data()  # no "no data found" error
    dm.trainer = SimpleNamespace(predicting=False)
    with pytest.raises(EvaError, match="no data found"):
        dm.prepare_data()
