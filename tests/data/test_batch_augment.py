"""data.loader: batched (data/batch_augment.py) — batched augmentation semantics against albumentations, index batches, training."""

from __future__ import annotations

import logging

import albumentations as A
import lightning as L
import numpy as np
import pytest
import torch
from conftest import write_mnist
from tiny import TinyNet
from torch.utils.data import DataLoader, DistributedSampler

from eva_lightning.cli import EvaCLI
from eva_lightning.data import VisionDataModule
from eva_lightning.data.datamodule import ImageSplit
from eva_lightning.data.batch_augment import BatchAugment, BatchedSplit, Rotate
from eva_lightning.data.transforms import build_pipeline

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _augment(specs, mean=MEAN, std=STD) -> BatchAugment:
    return BatchAugment(build_pipeline(specs, mean, std))


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_pad_and_crop_offsets_within_pad_and_uniform():
    # every pixel holds its own index, so where pixel (16, 16) lands gives the crop offset
    n, pad = 3000, 4
    x = (torch.arange(32 * 32, dtype=torch.float32) + 1).view(1, 1, 32, 32).expand(n, 1, 32, 32)
    aug = _augment([{"name": "PadIfNeeded", "min_height": 40, "min_width": 40, "fill": 0},
                    {"name": "RandomCrop", "height": 32, "width": 32}], mean=(0,), std=(1,))
    out = aug.ops[1](aug.ops[0](x, _gen()), _gen())
    assert out.shape == (n, 1, 32, 32)
    hit = (out[:, 0] == 16 * 32 + 16 + 1).nonzero()
    assert len(hit) == n  # the centre pixel survives any offset within ±4
    dy, dx = hit[:, 1] - 16, hit[:, 2] - 16
    assert dy.abs().max() <= pad and dx.abs().max() <= pad
    counts = torch.bincount(((dy + pad) * 9 + dx + pad), minlength=81)
    assert counts.min() > 0.5 * n / 81  # all 81 offsets, roughly uniform (albumentations' rule)
    # geometry: each crop is the padded image shifted, zeros (the fill) where it left the image
    b = 0
    shifted = torch.zeros(40, 40)
    shifted[4:36, 4:36] = x[0, 0]
    oy, ox = int(4 - dy[b]), int(4 - dx[b])
    assert torch.equal(out[hit[b, 0], 0], shifted[oy : oy + 32, ox : ox + 32])


def test_translate_by_reflect_padding_matches_albumentations():
    """configs/cifar10_fast.yaml's translate (airbench94's): pad to 36 with reflect_101, crop 32. Each crop is a window
    of the reflect-padded image, as albumentations' own crop of its own padding is, and all 25 shifts occur."""
    specs = [{"name": "PadIfNeeded", "min_height": 36, "min_width": 36, "border_mode": 4},
             {"name": "RandomCrop", "height": 32, "width": 32}]
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="reflect")  # numpy's reflect = cv2's REFLECT_101
    windows = {(oy, ox): padded[oy : oy + 32, ox : ox + 32] for oy in range(5) for ox in range(5)}
    out = _augment(specs, mean=(0, 0, 0), std=(1, 1, 1))(torch.from_numpy(img).expand(600, 32, 32, 3), _gen())
    out = out.permute(0, 2, 3, 1).numpy()  # no Normalize: pixel values come out
    used = [next(k for k, w in windows.items() if np.array_equal(o, w)) for o in out]  # StopIteration: no window
    assert set(used) == set(windows)
    pipeline = A.Compose([A.PadIfNeeded(36, 36, border_mode=4), A.RandomCrop(32, 32)], seed=0)
    crops = [pipeline(image=img)["image"] for _ in range(20)]
    assert all(any(np.array_equal(c, w) for w in windows.values()) for c in crops)


def test_random_crop_pad_if_needed_with_channel_fill():
    aug = _augment([{"name": "RandomCrop", "height": 36, "width": 36, "pad_if_needed": True, "fill": [10, 20, 30]}],
                   mean=(0, 0, 0), std=(1, 1, 1))  # no Normalize in the specs: pixel values come out
    x = torch.full((64, 32, 32, 3), 200, dtype=torch.uint8)
    out = aug(x, _gen())
    assert out.shape == (64, 3, 36, 36)
    # padding of 2 on each side: a crop of size 36 from 36 keeps every border pixel = fill
    assert torch.equal(out[:, :, 0, 0], torch.tensor([10.0, 20.0, 30.0]).expand(64, 3))


def test_flip_rate_is_p():
    x = torch.zeros(4000, 8, 8, 1, dtype=torch.uint8)
    x[:, :, 0] = 255  # left column bright
    for p in (0.5, 0.2):
        out = _augment([{"name": "HorizontalFlip", "p": p}], mean=(0,), std=(1,))(x, _gen())
        flipped = (out[:, 0, :, -1] == 255).all(1).float().mean().item()
        assert abs(flipped - p) < 0.03
        assert ((out[:, 0, :, 0] == 255).all(1) ^ (out[:, 0, :, -1] == 255).all(1)).all()


def test_cutout_hole_area_fill_and_probability():
    x = torch.full((2000, 32, 32, 3), 255, dtype=torch.uint8)
    spec = {"name": "CoarseDropout", "num_holes_range": [1, 1], "hole_height_range": [8, 8],
            "hole_width_range": [8, 8], "fill": [1, 2, 3], "p": 0.5}
    out = _augment([spec], mean=(0, 0, 0), std=(1, 1, 1))(x, _gen())
    holed = out[:, 0] != 255
    area = holed.flatten(1).sum(1)
    assert set(area.unique().tolist()) == {0, 64}  # one whole 8x8 hole inside the image, or none
    assert abs((area > 0).float().mean().item() - 0.5) < 0.04
    rows, cols = holed.any(2), holed.any(1)
    assert ((rows.sum(1) == 8) | (area == 0)).all() and ((cols.sum(1) == 8) | (area == 0)).all()
    i = int(area.argmax())
    assert torch.equal(out[i][:, holed[i]].T.unique(dim=0), torch.tensor([[1.0, 2.0, 3.0]]))
    # every position where a hole fits is used (albumentations: corner uniform in [0, 32 - 8])
    tops = rows.float().argmax(1)[area > 0]
    assert tops.min() == 0 and tops.max() == 24


def test_cutout_hole_count_and_size_ranges():
    x = torch.full((500, 32, 32, 1), 255, dtype=torch.uint8)
    spec = {"name": "CoarseDropout", "num_holes_range": [2, 3], "hole_height_range": [0.1, 0.2],
            "hole_width_range": [4, 6], "fill": 0, "p": 1.0}
    out = _augment([spec], mean=(0,), std=(1,))(x, _gen())
    area = (out[:, 0] == 0).flatten(1).sum(1)
    # 2-3 holes of height int(32*U(0.1,0.2)) in 3..6 and width 4..6 (they may overlap)
    assert area.min() >= 3 * 4 and area.max() <= 3 * 6 * 6


def test_normalisation_identical_to_albumentations_path():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 32, 32, 3), dtype=np.uint8)
    specs = [{"name": "Normalize"}, {"name": "ToTensorV2"}]
    pipeline = build_pipeline(specs, MEAN, STD)
    split = ImageSplit(images, np.arange(50), pipeline, _augment(specs))
    got = torch.cat([split.gather_batch(idx)[0] for idx in DataLoader(split, batch_size=16)])
    want = torch.stack([pipeline(image=im)["image"] for im in images])
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("shape", [(28, 28), (24, 32)])
@pytest.mark.parametrize("angle", [7.0, -30.0])
def test_rotation_matches_albumentations(shape, angle):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = (255 * np.exp(-((yy - h * 0.35) ** 2 / 30 + (xx - w * 0.6) ** 2 / 60))).astype(np.uint8)
    img[3:6, 2:20] = 200
    want = A.Rotate(limit=(angle, angle), p=1.0, fill=40)(image=img)["image"].astype(np.float32)
    got = Rotate((angle, angle), 40, 1.0)(torch.from_numpy(img).float()[None, None], _gen())[0, 0].numpy()
    # cv2 rounds to uint8; the float result rounds to exactly cv2's pixels
    assert np.abs(got - want).max() <= 0.5 + 1e-3
    assert np.abs(np.round(got) - want).mean() < 0.01


def test_rotate_probability_and_affine_rotate():
    x = torch.zeros(1000, 28, 28, 1, dtype=torch.uint8)
    x[:, 10:18, :] = 255  # a horizontal band: any rotation changes its edge pixels
    out = _augment([{"name": "Rotate", "limit": 7}], mean=(0,), std=(1,))(x, _gen())  # default p=0.5
    changed = (out[:, 0] != x[:, :, :, 0].float()).flatten(1).any(1).float().mean().item()
    assert abs(changed - 0.5) < 0.05
    aff = _augment([{"name": "Affine", "rotate": [-7, 7], "p": 1.0}], mean=(0,), std=(1,))(x, _gen())
    assert (aff[:, 0] != x[:, :, :, 0].float()).flatten(1).any(1).all()


def test_index_batches_through_a_standard_dataloader_sharded_and_reseeded():
    images = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4, 1)
    specs = [{"name": "HorizontalFlip"}]
    split = ImageSplit(images, np.arange(10), build_pipeline(specs, (0,), (1,)), _augment(specs, (0,), (1,)), reseed=True)
    batch = next(iter(DataLoader(split, batch_size=4, shuffle=True)))
    assert batch.dtype == torch.int64 and batch.shape == (4,)  # indices: gathered where they are sent
    x, y = split.gather_batch(batch)
    assert torch.equal(y, batch) and x.shape == (4, 1, 4, 4)
    # Lightning's DDP sharding is a DistributedSampler over the same split: every sample once
    shards = [torch.cat(list(DataLoader(split, batch_size=2, sampler=DistributedSampler(split, 3, r, seed=3))))
              for r in range(3)]
    assert all(len(s) == 4 for s in shards) and set(torch.cat(shards).tolist()) == set(range(10))
    # a training split draws each batch's augmentation from torch's RNG: the seed decides it
    every = torch.arange(10).repeat(40)
    flips = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        flips.append(torch.stack([split.gather_batch(every)[0] for _ in range(2)]))
    assert torch.equal(flips[0], flips[1]) and not torch.equal(flips[0], flips[2])
    assert not torch.equal(flips[0][0], flips[0][1])  # and the next batch is a new draw


#: the devices this machine has: the CPU runs the code path a GPU runs
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_batched_split_works_on_the_device_its_index_batches_arrive_on(device):
    images = torch.arange(10 * 8 * 8, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(10, 8, 8, 1)
    specs = [{"name": "PadIfNeeded", "min_height": 10, "min_width": 10}, {"name": "RandomCrop", "height": 8, "width": 8},
             {"name": "HorizontalFlip"}, {"name": "Normalize"}]
    split = BatchedSplit(images, torch.arange(10), _augment(specs, (0,), (1,)))
    idx = torch.arange(10, device=device).repeat(20)
    x, y = split(idx, seed=3)
    assert x.device == y.device == idx.device and x.shape == (200, 1, 8, 8) and torch.equal(y, idx)
    assert torch.equal(split(idx, seed=3)[0], x)  # the seed decides the batch
    assert not torch.equal(split(idx, seed=4)[0], x)
    assert not torch.equal(split(idx)[0], split(idx)[0])  # without a seed: the stream goes on


def test_unsupported_transform_falls_back_with_message(mnist_dir, caplog):
    dm = VisionDataModule(dataset="mnist", data_dir=str(mnist_dir), download=False, loader="batched",
                          train_transforms=[{"name": "GaussNoise"}, {"name": "Normalize"}])
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "GaussNoise" in caplog.text and "DataLoader path" in caplog.text
    assert dm.train_set.augment is None and dm.val_set.augment is not None
    assert isinstance(dm.train_set[0][0], torch.Tensor)  # albumentations per sample for that split


def test_former_loader_name_gpu_still_batches_and_says_so(mnist_dir, caplog):
    """Configs and checkpoints written before the rename (data.loader: gpu) keep working, with one warning."""
    with caplog.at_level(logging.WARNING):
        dm = VisionDataModule(dataset="mnist", data_dir=str(mnist_dir), download=False, loader="gpu",
                              train_transforms=[{"name": "Normalize"}])
    assert dm.loader == "batched" and "data.loader: batched" in caplog.text
    dm.setup("fit")
    assert dm.train_set.augment is not None  # batched, not the DataLoader path


def test_batched_loader_trains_in_trainer(tmp_path):
    data = write_mnist(tmp_path / "data", n_train=512)
    L.seed_everything(1)
    dm = VisionDataModule(dataset="mnist", data_dir=str(data), download=False, loader="batched", batch_size=32,
                          train_transforms=[{"name": "Rotate", "limit": 7}, {"name": "Normalize"}])
    model = TinyNet(num_classes=10, in_channels=1, optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, dm)
    # a DataLoader (its resumable subclass, data/resumable.py): Lightning keeps the sampler and DDP sharding
    assert isinstance(trainer.train_dataloader, DataLoader) and trainer.train_dataloader.dataset is dm.train_set
    assert dm.train_set.augment is not None
    assert trainer.num_training_batches == 16 and trainer.global_step == 48  # 512 / 32 per epoch
    assert trainer.callback_metrics["val/loss"] < 2.1  # it learns (chance: ln 10 = 2.30)


def test_config_with_batched_loader_runs_fast_dev_run(tiny_config, tmp_path, monkeypatch, lightning_log):
    cfg = tiny_config.read_text() + (
        "  loader: batched\n"
        "  train_transforms:\n"
        "  - {name: PadIfNeeded, min_height: 32, min_width: 32}\n"
        "  - {name: RandomCrop, height: 28, width: 28}\n"
        "  - {name: CoarseDropout, num_holes_range: [1, 1], hole_height_range: [8, 8], hole_width_range: [8, 8]}\n"
        "  - {name: Normalize}\n"
    )
    tiny_config.write_text(cfg)
    monkeypatch.chdir(tmp_path)
    EvaCLI(args=["fit", "--config", str(tiny_config), "--trainer.fast_dev_run=2"])
    assert "DataLoader path" not in lightning_log.text
    assert "`Trainer.fit` stopped: `max_steps=2` reached" in lightning_log.text
