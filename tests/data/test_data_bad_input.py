"""Bad data a user can hand the data module (issue #26): each ends in one clear error, or just works.

Damaged or partial copies, stray folders, a ``data_dir`` that cannot hold a download, images
fixed after they were cached, and a partial validation that must still be a fair sample.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_CONFIG, tar_tree, write_cifar_jpeg, write_folder, write_mnist
from eva_lightning.data import VisionDataModule, sources
from eva_lightning.data.datasets import CIFAR10
from eva_lightning.entry import main
from eva_lightning.core.errors import EvaError


def _train_labels(dm: VisionDataModule) -> np.ndarray:
    dm.setup("fit")
    return dm.train_set.labels.numpy()


# ------------------------------------------------------------------ the decoded-image cache
def test_folder_cache_follows_images_replaced_inside_class_folders(folder_dir):
    first = VisionDataModule("folder", data_dir=str(folder_dir))
    first.setup("fit")
    old = first.train_set.images.numpy().copy()
    # fix one image and add another inside a class folder: the tree's top folder does not change
    top = os.stat(folder_dir)
    fixed = folder_dir / "train" / "dog" / "0003.png"
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(fixed)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder_dir / "train" / "frog" / "9999.png")
    os.utime(folder_dir, ns=(top.st_atime_ns, top.st_mtime_ns))

    again = VisionDataModule("folder", data_dir=str(folder_dir))
    again.setup("fit")
    images, labels = again.train_set.images.numpy(), again.train_set.labels.numpy()
    assert len(labels) == len(old) + 1 and np.bincount(labels).tolist() == [12, 12, 13]
    assert (images == 255).all(axis=(1, 2, 3)).sum() == 1  # the fixed image, not its cached old self
    # the stale cache of the same split is gone: one cache per split stays beside the data
    assert len(list(folder_dir.parent.glob(".folder.train.*.eva-cache.npz"))) == 1


def test_folder_cache_is_reused_while_nothing_changed(folder_dir, monkeypatch):
    VisionDataModule("folder", data_dir=str(folder_dir)).setup("fit")
    monkeypatch.setattr(sources, "decode_image", lambda *a, **k: pytest.fail("decoded again although unchanged"))
    VisionDataModule("folder", data_dir=str(folder_dir)).setup("fit")


def test_a_damaged_cache_is_decoded_again(folder_dir, caplog):
    VisionDataModule("folder", data_dir=str(folder_dir)).setup("fit")
    for cache in folder_dir.parent.glob("*.eva-cache.npz"):
        cache.write_bytes(cache.read_bytes()[:100])
    dm = VisionDataModule("folder", data_dir=str(folder_dir))
    assert len(_train_labels(dm)) == 36
    assert "cannot be read" in caplog.text


# ------------------------------------------------------------------ class folders
@pytest.mark.parametrize("archived", [False, True], ids=["tree", "archive"])
def test_hidden_folder_in_a_cifar_root_is_ignored_and_labels_stay(tmp_path, archived):
    root = write_cifar_jpeg(tmp_path / "data", per_class=(2, 1))
    for split in ("train", "test"):
        stray = root / "cifar10-jpeg" / split / ".ipynb_checkpoints"
        stray.mkdir()
        shutil.copy(root / "cifar10-jpeg" / split / "truck" / "0000.jpg", stray / "0000-checkpoint.jpg")
    cat = root / "cifar10-jpeg" / "train" / "cat"
    shutil.copy(cat / "0000.jpg", cat / ".x.jpg")
    if archived:
        tar_tree(root / "cifar10-jpeg", root / "cifar10-jpeg.tar.gz")
        shutil.rmtree(root / "cifar10-jpeg")
    dm = VisionDataModule("cifar10", data_dir=str(root), download=False)
    labels = _train_labels(dm)
    assert dm.classes == CIFAR10.classes
    assert np.bincount(labels).tolist() == [2] * 10  # no 11th class, nothing shifted, no hidden images
    assert sorted(dm.val_set.labels.tolist()) == list(range(10))


@pytest.mark.parametrize("archived", [False, True], ids=["tree", "archive"])
def test_mistyped_class_folder_is_named(tmp_path, archived):
    root = write_cifar_jpeg(tmp_path / "data", per_class=(2, 1))
    train = root / "cifar10-jpeg" / "train"
    (train / "airplane").rename(train / "aeroplane")
    (train / "notes").mkdir()
    (train / "notes" / "a.jpg").write_bytes((train / "cat" / "0000.jpg").read_bytes())
    if archived:
        tar_tree(root / "cifar10-jpeg", root / "cifar10-jpeg.tar.gz")
        shutil.rmtree(root / "cifar10-jpeg")
    with pytest.raises(EvaError) as err:
        _train_labels(VisionDataModule("cifar10", data_dir=str(root), download=False))
    msg = str(err.value)
    assert "extra ['aeroplane', 'notes']" in msg and "missing ['airplane']" in msg and "train" in msg


def test_a_tree_without_its_test_folder_is_named(folder_dir):
    shutil.rmtree(folder_dir / "test")
    with pytest.raises(EvaError, match="has no test/ folder"):
        VisionDataModule("folder", data_dir=str(folder_dir)).setup("fit")


# ------------------------------------------------------------------ damaged copies
@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_mnist_names_the_file_and_the_fix(mnist_dir, damage):
    name = "train-images-idx3-ubyte" if damage == "truncated" else "train-labels-idx1-ubyte"
    path = mnist_dir / "MNIST" / "raw" / name
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.unlink()
    with pytest.raises(EvaError) as err:
        VisionDataModule("mnist", data_dir=str(mnist_dir), download=False).setup("fit")
    msg = str(err.value)
    assert str(path) in msg and ("truncated" if damage == "truncated" else "missing") in msg
    assert "download it again" in msg and "--data.download true" in msg


@pytest.mark.parametrize("bad", ["truncated", "not_an_archive"])
def test_damaged_folder_archive_is_named(tmp_path, bad):
    archive = tar_tree(write_folder(tmp_path / "shapes"), tmp_path / "shapes.tar.gz")
    archive.write_bytes(archive.read_bytes()[:3000] if bad == "truncated" else b"just some text\n")
    with pytest.raises(EvaError) as err:
        VisionDataModule("folder", data_dir=str(archive)).setup("fit")
    assert str(archive) in str(err.value) and "Copy or download it again" in str(err.value)


# ------------------------------------------------------------------ a data_dir that cannot take the data
@pytest.mark.parametrize("download", [True, False])
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_data_dir_that_is_a_file(tmp_path, dataset, download):
    afile = tmp_path / "data.txt"
    afile.write_text("not a folder")
    with pytest.raises(EvaError) as err:
        VisionDataModule(dataset, data_dir=str(afile), download=download).prepare_data()
    assert f"data_dir={afile} is a file, not a folder" in str(err.value) and "no internet" not in str(err.value)


def test_data_dir_under_a_file_with_download_on(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(EvaError) as err:
        VisionDataModule("mnist", data_dir=str(tmp_path / "afile" / "data"), download=True).prepare_data()
    assert "cannot be downloaded there: Not a directory" in str(err.value) and "no internet" not in str(err.value)


def test_read_only_data_dir_with_download_on(tmp_path, monkeypatch):
    # a real read-only folder does not stop root (these tests may run as root): refuse the write itself
    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(dir) / "tmpfile"))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(sources, "load_torchvision", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(EvaError) as err:
        VisionDataModule("mnist", data_dir=str(tmp_path), download=True).prepare_data()
    msg = str(err.value)
    assert f"cannot be downloaded there: Read-only file system: {tmp_path}" in msg and "no internet" not in msg


def test_a_full_disk_during_the_download_is_named(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "MNIST/raw/train-images-idx3-ubyte.gz"))

    monkeypatch.setattr(sources, "load_torchvision", disk_full)
    with pytest.raises(EvaError) as err:
        VisionDataModule("mnist", data_dir=str(tmp_path), download=True).prepare_data()
    assert "the download failed: No space left on device" in str(err.value)


def test_data_errors_end_in_one_error_line(tmp_path, monkeypatch, capsys):
    """Through ``eva fit``: exit 2, one ``error:`` line, no traceback."""
    data = write_mnist(tmp_path / "data", n_train=64, n_test=32)
    images = data / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(data_dir=data))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(config)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(images) in errors[0], err


# ------------------------------------------------------------------ a partial validation is a fair sample
def test_first_evaluation_batch_holds_several_classes(tmp_path):
    tree = write_folder(tmp_path / "shapes", classes=tuple("abcdefgh"), per_class=(4, 16), size=8)
    dm = VisionDataModule("folder", data_dir=str(tree), batch_size=16)
    dm.setup("fit")
    dm.setup("test")
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        _, y = next(iter(loader))
        assert len(set(y.tolist())) >= 4, y  # stored class by class, the first batch was all "a"
    # the whole split is still there, once each, and its order does not follow the run's seed
    assert np.bincount(dm.val_set.labels.numpy()).tolist() == [16] * 8
    other = VisionDataModule("folder", data_dir=str(tree), batch_size=16, seed=7)
    other.setup("fit")
    assert np.array_equal(other.val_set.labels.numpy(), dm.val_set.labels.numpy())


def test_validation_carved_from_train_is_shuffled_too(tmp_path):
    tree = write_folder(tmp_path / "shapes", classes=tuple("abcdefgh"), per_class=(16, 1), size=8)
    dm = VisionDataModule("folder", data_dir=str(tree), batch_size=8, val_split=0.5)
    dm.setup("fit")
    _, y = next(iter(dm.val_dataloader()))
    assert len(set(y.tolist())) >= 3, y
