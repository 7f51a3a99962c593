"""One seed rule for every loader: order and augmentation follow the run's seed; resume continues the stream."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import TINY_CONFIG
from tiny import TinyNet

from eva_lightning.cli import EvaCLI
from eva_lightning.data import VisionDataModule

#: a batched pipeline (data.loader: batched) and one that is not batched (the per-sample DataLoader path)
PIPELINES = {
    "batched": [{"name": "PadIfNeeded", "min_height": 32, "min_width": 32}, {"name": "RandomCrop", "height": 28, "width": 28},
            {"name": "HorizontalFlip"}, {"name": "Rotate", "limit": 15}, {"name": "Normalize"}],
    "torch": [{"name": "Rotate", "limit": 30, "p": 1.0}, {"name": "Normalize"}],
}


class FirstBatches(L.Callback):
    """The first training batch of every epoch, as the step gets it (after ``on_after_batch_transfer``)."""

    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.images.append(batch[0].clone())


def _first_batches(mnist_dir: Path, loader: str, seed: int, data_seed: int = 1) -> list[torch.Tensor]:
    L.seed_everything(seed)
    dm = VisionDataModule("mnist", data_dir=str(mnist_dir), download=False, batch_size=16, loader=loader,
                          seed=data_seed, train_transforms=PIPELINES[loader])
    record = FirstBatches()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[record])
    trainer.fit(TinyNet(num_classes=10, in_channels=1), dm)
    assert (dm.train_set.augment is not None) == (loader == "batched")  # the path this case is about
    return record.images


@pytest.mark.parametrize("loader", ["batched", "torch"])
def test_the_run_seed_decides_the_batches(mnist_dir, loader):
    first, again, other = (_first_batches(mnist_dir, loader, s) for s in (5, 5, 6))
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # same seed: identical epochs
    assert not torch.equal(first[0], other[0])  # another seed: other batches
    assert not torch.equal(first[0], first[1])  # the next epoch: a new draw
    # data.seed only splits off validation; with val_split=0 it changes nothing
    assert all(torch.equal(a, b) for a, b in zip(first, _first_batches(mnist_dir, loader, 5, data_seed=2)))


def _fit(workdir: Path, config: Path, *args: str, ckpt_path: str | None = None) -> dict[str, torch.Tensor]:
    workdir.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        cli = EvaCLI(args=["--config", str(config), "--trainer.deterministic", "true", *args], run=False)
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt_path)
    return {k: v.clone() for k, v in cli.model.state_dict().items()}


@pytest.mark.parametrize("loader", ["batched", "torch"])
def test_resume_continues_the_augmentation_stream(tmp_path, mnist_dir, loader):
    """Two epochs straight equal one epoch plus a resume for the second (bitwise, CPU), augmentation on."""
    config = tmp_path / "tiny.yaml"
    specs = "".join(f"  - {spec}\n" for spec in PIPELINES[loader]).replace("'", "")
    config.write_text(TINY_CONFIG.format(data_dir=mnist_dir) + f"  loader: {loader}\n  train_transforms:\n" + specs)
    straight = _fit(tmp_path / "straight", config, "--trainer.max_epochs", "2")
    _fit(tmp_path / "first", config, "--trainer.max_epochs", "1")
    last = next((tmp_path / "first").rglob("last.ckpt"))
    resumed = _fit(tmp_path / "resumed", config, "--trainer.max_epochs", "2", ckpt_path=str(last))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    other = _fit(tmp_path / "other", config, "--trainer.max_epochs", "2", "--seed_everything", "2")
    assert not all(torch.equal(straight[k], other[k]) for k in straight)  # the comparison can fail
