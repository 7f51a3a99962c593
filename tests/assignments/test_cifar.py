"""CIFAR-10 assignments S7-S11: architecture constraints, the S9/S10 pipeline, seeded training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_cifar_jpeg
from eva_lightning.analysis import summary
from eva_lightning.tools.summary import main as summary_main
from eva_lightning.assignments.s7 import S7Net
from eva_lightning.assignments.s8 import BasicBlock, resnet18
from eva_lightning.assignments.s11 import CustomResNet
from eva_lightning.assignments.cifar10_fast import AirbenchNet
from eva_lightning.cli import EvaCLI
from eva_lightning.data.batch_augment import BatchAugment
from eva_lightning.data.datasets import CIFAR10
from eva_lightning.data.transforms import build_pipeline
from conftest import ROOT, config_args, read_config

CONFIGS = ROOT / "configs"
MEAN, STD = CIFAR10.mean, CIFAR10.std


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine two OpenMP threads spinning against other
    processes made a tiny ResNet step 30x slower (7 s instead of 0.2 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(name: str) -> dict:
    return read_config(CONFIGS / f"{name}.yaml")


# --------------------------------------------------------------------------- S7 constraints
def test_s7_meets_the_assignment_constraints():
    s = summary.summarize(S7Net(), (3, 32, 32))
    assert s.params < 1_000_000
    assert s.receptive_field >= 45
    assert s.maxpools == 3
    assert s.has_depthwise_separable and s.has_dilated and s.has_gap
    assert not s.has_linear  # GAP + 1x1 conv head
    assert s.output_shape == (10,)


def test_eva_summary_reports_the_s7_config(capsys):
    summary_main(config_args(CONFIGS / "s7.yaml"))
    out = capsys.readouterr().out
    assert "S7Model" in out
    assert f"parameters: {sum(p.numel() for p in S7Net().parameters()):,}" in out
    assert "max-pools: 3 | depthwise-separable: yes | dilated conv: yes | global pooling: yes" in out


# --------------------------------------------------------------------------- ResNets
def test_s11_custom_resnet_shapes_and_residuals():
    net = CustomResNet().eval()
    shapes = {}
    for name in ("prep", "layer1", "layer2", "layer3", "pool"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 32, 32))
    assert shapes == {"prep": (64, 32, 32), "layer1": (128, 16, 16), "layer2": (256, 8, 8), "layer3": (512, 4, 4), "pool": (512, 1, 1)}
    assert logits.shape == (2, 10)
    assert net.layer1.res is not None and net.layer2.res is None and net.layer3.res is not None
    assert sum(p.numel() for p in net.parameters()) == 6_573_120
    # layer1 adds its ResBlock's output to X: zeroing the block leaves X itself
    x = torch.randn(2, 64, 32, 32)
    with torch.no_grad():
        for p in net.layer1.res.parameters():
            p.zero_()
        assert torch.equal(net.layer1(x), net.layer1.conv(x))


def test_cifar10_fast_airbench_layout_and_frozen_parts():
    """airbench94's network: 24 whitening channels, groups 64/256/256 halving the side, logits x 1/9; frozen: the
    whitening filters and the BatchNorm scales; each group's convs start as identities on their first channels."""
    net = AirbenchNet().eval()
    shapes = {}
    for name, m in [("whiten", net.whiten), *((f"group{i}", g) for i, g in enumerate(net.groups)), ("pool", net.pool)]:
        m.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 32, 32))
    assert shapes == {"whiten": (24, 31, 31), "group0": (64, 15, 15), "group1": (256, 7, 7), "group2": (256, 3, 3),
                      "pool": (256, 1, 1)} and logits.shape == (2, 10)
    assert sum(p.numel() for p in net.parameters()) == 1_972_792
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert frozen == ["whiten.weight", *(f"groups.{g}.{i}.weight" for g in range(3) for i in (2, 5))]
    conv = net.groups[1][0]  # 64 -> 256: its first 64 filters pass their channel through
    x = torch.randn(1, 64, 7, 7)
    with torch.no_grad():
        assert torch.equal(torch.nn.functional.conv2d(x, conv.weight[:64], padding=1), x)
    assert net.logit_scale == pytest.approx(1 / 9) and net.groups[0][2].momentum == 0.4


def test_s8_resnet18_cifar_stem_and_zero_init():
    net = resnet18()
    assert sum(p.numel() for p in net.parameters()) == 11_173_962
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8 and all(torch.all(b.bn2.weight == 0) for b in blocks)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --------------------------------------------------------------------------- S9/S10 pipeline
@pytest.mark.parametrize("name", ["s9", "s10"])
def test_train_pipeline_shapes_and_cutout_hole(name):
    specs = _config(name)["data"]["train_transforms"]
    assert [s["name"] for s in specs] == ["PadIfNeeded", "RandomCrop", "HorizontalFlip", "CoarseDropout", "Normalize", "ToTensorV2"]
    image = np.full((32, 32, 3), 200, dtype=np.uint8)  # no pixel of it normalises to about 0
    out = build_pipeline(specs, MEAN, STD)(image=image)["image"]
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    # with p=1 the 8x8 hole is always there: filled with the mean, so about 0 after Normalize
    always = [{**s, "p": 1.0} if s["name"] == "CoarseDropout" else s for s in specs]
    pipe = build_pipeline(always, MEAN, STD)
    for _ in range(5):
        hole = (pipe(image=image)["image"].abs() < 0.03).all(dim=0)
        rows, cols = hole.nonzero(as_tuple=True)
        assert hole.sum() == 64 and rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
    # ...and the same config runs batched (data.loader: batched; no fallback to the DataLoader path)
    augment = BatchAugment(build_pipeline(always, MEAN, STD))
    batch = augment(torch.from_numpy(np.stack([image] * 4)), torch.Generator().manual_seed(0))
    assert batch.shape == (4, 3, 32, 32)
    assert ((batch.abs() < 0.03).all(dim=1).sum(dim=(1, 2)) == 64).all()


@pytest.mark.parametrize("name", ["s9", "s10"])
def test_test_pipeline_is_deterministic_normalisation(name):
    specs = _config(name)["data"]["test_transforms"]
    pipe = build_pipeline(specs, MEAN, STD)
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    a, b = pipe(image=image)["image"], pipe(image=image)["image"]
    assert torch.equal(a, b)
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(a, expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- seeded runs
@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory) -> Path:
    return write_cifar_jpeg(tmp_path_factory.mktemp("cifar"), per_class=(8, 2))


def _first_epoch_loss(config: str, data_dir: Path, workdir: Path, *extra: str) -> float:
    cli = EvaCLI(
        args=[
            *config_args(CONFIGS / config), "--data.data_dir", str(data_dir), "--data.download", "false",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
            "--trainer.max_epochs", "1", "--model.init_args.schedule.peak_epoch", "0.5",
            "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(workdir),
            "--data.batch_size", "16", "--data.num_workers", "0", "--model.init_args.width", "8",
            *extra,
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    return float(cli.trainer.callback_metrics["train/loss"])


def test_same_seed_same_first_epoch_loss(tiny_cifar, tmp_path, monkeypatch):
    """S9's config as written (random crop, flip, cutout on the seeded device loader), on the CPU:
    seed 1 twice gives the same first-epoch loss, seed 2 another one."""
    monkeypatch.chdir(tmp_path)
    first = _first_epoch_loss("s9.yaml", tiny_cifar, tmp_path / "a")
    again = _first_epoch_loss("s9.yaml", tiny_cifar, tmp_path / "b")
    other = _first_epoch_loss("s9.yaml", tiny_cifar, tmp_path / "c", "--seed_everything", "2")
    assert np.isfinite(first)
    assert first == again
    assert first != other


def test_same_seed_same_first_epoch_loss_dataloader_path(tiny_cifar, tmp_path, monkeypatch):
    """The same with ``data.loader: torch``: albumentations' own RNG is seeded from torch's seed."""
    monkeypatch.chdir(tmp_path)
    args = ("--data.loader", "torch")
    assert _first_epoch_loss("s9.yaml", tiny_cifar, tmp_path / "a", *args) == _first_epoch_loss("s9.yaml", tiny_cifar, tmp_path / "b", *args)
