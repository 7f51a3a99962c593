"""Image callbacks, read back from what they wrote: PNG files and TensorBoard image/scalar summaries."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eva_lightning.callbacks import ConfusionMatrixFigure, CurvesFigure, GradCAMGrid, MisclassifiedGrid
from eva_lightning.data import VisionDataModule
from eva_lightning.core.errors import EvaError
from tiny import TinyNet

NUM_CLASSES = 4


class LabelledPixels(L.LightningDataModule):
    """Validation images whose first pixel holds the label, so an oracle can be exactly right or wrong."""

    mean, std, classes = (0.5,), (0.25,), ("ant", "bee", "cat", "dog")

    def __init__(self, n: int = 40) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % NUM_CLASSES
        self.x = torch.rand(n, 1, 8, 8, generator=g)
        self.x[:, 0, 0, 0] = self.y.float()

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16)


class Oracle(L.LightningModule):
    """Predicts (label + shift) % classes: shift 0 is perfect, shift 1 always wrong."""

    def __init__(self, shift: int) -> None:
        super().__init__()
        self.shift = shift
        self.num_classes = NUM_CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = (x[:, 0, 0, 0].round().long() + self.shift) % NUM_CLASSES
        return nn.functional.one_hot(pred, NUM_CLASSES).float() * 10

    def validation_step(self, batch, batch_idx):
        return {"logits": self(batch[0])}  # what the image callbacks draw from, as ImageClassifier returns it


def tb_tags(log_dir: Path) -> dict[str, list[str]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc.Tags()


def validate(tmp_path: Path, shift: int, callbacks: list) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", logger=TensorBoardLogger(tmp_path, name="run"), callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.validate(Oracle(shift), datamodule=LabelledPixels())
    return trainer


def test_grid_and_confusion_with_always_wrong_model(tmp_path):
    grid, confusion = MisclassifiedGrid(num_images=25), ConfusionMatrixFigure()
    trainer = validate(tmp_path, shift=1, callbacks=[grid, confusion])
    log_dir = Path(trainer.log_dir)
    assert grid.last_count == 25  # 40 wrong predictions, grid capped at num_images
    # eva validate: named after the stage (Lightning does not restore a checkpoint's epoch outside fit)
    with Image.open(log_dir / "misclassified_validate.png") as im:
        w, h = im.size
        assert w > 500 and h > 500 and im.mode in ("RGB", "RGBA")
    # every label y was predicted as y + 1: counts only on that off-diagonal
    expected = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for y in range(NUM_CLASSES):
        expected[y, (y + 1) % NUM_CLASSES] = 10
    torch.testing.assert_close(confusion.last, expected)
    assert (log_dir / "confusion_val_epoch0.png").stat().st_size > 0
    images = tb_tags(log_dir)["images"]
    assert "misclassified" in images and "confusion_matrix/val" in images


def test_grid_with_perfect_model_writes_nothing(tmp_path, caplog):
    grid = MisclassifiedGrid(num_images=25)
    with caplog.at_level(logging.INFO):
        trainer = validate(tmp_path, shift=0, callbacks=[grid])
    assert grid.last_count == 0
    assert not list(Path(trainer.log_dir).glob("misclassified*.png"))
    assert "no misclassified validation images" in caplog.text


def test_curves_and_gradcam_in_a_fit(tmp_path, mnist_dir):
    curves, cam = CurvesFigure(), GradCAMGrid(num_images=4, every_n_epochs=2)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, limit_train_batches=3, limit_val_batches=2, logger=TensorBoardLogger(tmp_path, name="fit"),
        callbacks=[curves, cam], enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    dm = VisionDataModule(dataset="mnist", data_dir=str(mnist_dir), download=False, batch_size=16)
    model = TinyNet(num_classes=10, in_channels=1, optimizer=lambda p: torch.optim.SGD(p, lr=0.05))
    trainer.fit(model, datamodule=dm)
    log_dir = Path(trainer.log_dir)
    # the curves hold what TensorBoard holds, one point per epoch
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    for tag in ("train/loss", "val/loss", "train/acc", "val/acc"):
        logged = [e.value for e in acc.Scalars(tag)]
        assert [v for _, v in curves.history[tag]] == pytest.approx(logged), tag
        assert len(logged) == 2
    assert len(curves.history["lr"]) == 6 and curves.history["lr"][0][1] == pytest.approx(0.05)
    assert (log_dir / "curves.png").stat().st_size > 0
    # GradCAM only on every 2nd epoch: epoch 1
    assert [p.name for p in log_dir.glob("gradcam*.png")] == ["gradcam_epoch1.png"]
    assert cam.last_maps.shape == (4, 28, 28)
    assert {"curves", "gradcam"} <= set(acc.Tags()["images"])


def test_gradcam_sample_spans_the_classes_of_a_class_sorted_set():
    # CIFAR-10's test folder is sorted by class: the first 8 images would all be airplanes
    cam = GradCAMGrid(num_images=6)
    trainer = type("T", (), {"is_global_zero": True, "sanity_checking": False, "current_epoch": 0})()
    labels = torch.arange(NUM_CLASSES).repeat_interleave(10)  # 10 of class 0, then 10 of class 1 ...
    images = labels.float()[:, None, None, None].expand(-1, 1, 2, 2)
    cam.on_validation_epoch_start(trainer, None)
    for start in range(0, len(labels), 16):
        cam.on_validation_batch_end(trainer, None, None, (images[start : start + 16], labels[start : start + 16]), 0)
    sample = [label for _, label in (cam._picked + cam._spare)[: cam.num_images]]
    # every class once, in validation order, then the first remaining images
    assert sample == [0, 1, 2, 3, 0, 0]
    assert [float(image.flatten()[0]) for image, _ in cam._picked] == [0.0, 1.0, 2.0, 3.0]


class CountedTinyNet(TinyNet):
    """TinyNet that counts the batches its network is run on."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.forward_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        return super().forward(x)


def test_image_callbacks_reuse_the_steps_logits(tmp_path):
    # 40 images in batches of 16: 3 validation batches, so 3 forward passes and not one more
    grid, confusion = MisclassifiedGrid(num_images=4), ConfusionMatrixFigure()
    model = CountedTinyNet(num_classes=NUM_CLASSES, in_channels=1)
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[grid, confusion],
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    dm = LabelledPixels()
    trainer.validate(model, datamodule=dm)
    assert model.forward_calls == 3
    # and they drew from those logits: the matrix holds exactly the module's predictions
    model.eval()
    with torch.no_grad():
        pred = model(dm.x).argmax(1)
    expected = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for t, p in zip(dm.y.tolist(), pred.tolist()):
        expected[t, p] += 1
    torch.testing.assert_close(confusion.last, expected)
    assert grid.last_count == min(4, int((pred != dm.y).sum()))
    model.forward_calls = 0
    trainer.test(model, dataloaders=dm.val_dataloader())
    assert model.forward_calls == 3
    torch.testing.assert_close(confusion.last, expected)


@pytest.mark.parametrize("make", [lambda: MisclassifiedGrid(), lambda: ConfusionMatrixFigure()])
def test_image_callback_names_a_step_that_returns_no_logits(tmp_path, make):
    class Silent(Oracle):
        def validation_step(self, batch, batch_idx):
            return None

    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[make()], enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(EvaError, match="Silent's validation/test step returned NoneType: return"):
        trainer.validate(Silent(shift=1), datamodule=LabelledPixels())


# --------------------------------------------------------------------------- per-batch cost of callbacks (#15)
class HookLog(L.pytorch.profilers.PassThroughProfiler):
    """Records the callback and module hooks Lightning enters (it opens a profiler action for each call)."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[str] = []
        self.module_hooks: set[str] = set()

    def start(self, action_name: str) -> None:
        if action_name.startswith("[Callback]"):
            self.actions.append(action_name[len("[Callback]"):])
        elif action_name.startswith("[LightningModule]"):
            self.module_hooks.add(action_name.rsplit(".", 1)[1])


def test_callbacks_without_batch_hooks_cost_lightnings_batch_loop_nothing(tiny_config, tmp_path, monkeypatch):
    """Lightning skips a None hook: the decorated callbacks' epoch hooks run, their batch hooks are not entered,
    nor the LightningModule's own no-op training-batch hooks."""
    from eva_lightning.callbacks.hooks import BATCH_HOOKS, TRAIN_BATCH_HOOKS, batch_hooks_only_where_used
    from eva_lightning.cli import EvaCLI, LRMonitor

    @batch_hooks_only_where_used
    class EpochCounter(L.Callback):
        epochs = 0

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            EpochCounter.epochs += 1

    monkeypatch.chdir(tmp_path)
    profiler = HookLog()
    cli = EvaCLI(args=["--config", str(tiny_config), "--trainer.max_epochs", "2"], run=False)
    cli.trainer.profiler = profiler
    cli.trainer.callbacks.append(EpochCounter())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert EpochCounter.epochs == 2
    entered = {action.rsplit(".", 1)[0].split("{")[0] for action in profiler.actions if action.rsplit(".", 1)[1] in BATCH_HOOKS}
    # per batch, only the callbacks that act per batch: Lightning's checkpoint and LR monitor, the NaN guard, and
    # Preemption (a SIGTERM stops the run after the current batch)
    assert entered == {"ModelCheckpoint", LRMonitor.__qualname__, "FiniteLossGuard", "Preemption"}  # EpochCheckpoint keeps its key
    assert any(a.endswith("EpochCounter.on_train_epoch_end") for a in profiler.actions)
    assert {"RngState", "RunInfo", "RunReport", "LayerTable"} <= {a.split(".")[0] for a in profiler.actions}
    assert {"on_before_batch_transfer", "lr_scheduler_step", "on_train_epoch_start"} <= profiler.module_hooks
    assert not profiler.module_hooks & set(TRAIN_BATCH_HOOKS)


def test_image_callbacks_in_a_fit_with_compile(tmp_path, mnist_dir, monkeypatch):
    # `compile: true` used to end the first GradCAM epoch in a traceback; aot_eager exercises the
    # compiled wrapper as inductor does (the hooked layer runs inside the graph) without a C++ build
    from functools import partial

    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="aot_eager"))
    grid, cam = MisclassifiedGrid(num_images=4), GradCAMGrid(num_images=4)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=2, logger=TensorBoardLogger(tmp_path, name="fit"),
        callbacks=[grid, cam], enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    dm = VisionDataModule(dataset="mnist", data_dir=str(mnist_dir), download=False, batch_size=16)
    model = TinyNet(num_classes=10, in_channels=1, compile=True, optimizer=lambda p: torch.optim.SGD(p, lr=0.05))
    trainer.fit(model, datamodule=dm)
    assert "_compiled" in model.__dict__  # the steps did run compiled
    log_dir = Path(trainer.log_dir)
    assert (log_dir / "gradcam_epoch0.png").stat().st_size > 0 and cam.last_maps.shape == (4, 28, 28)
    assert grid.last_count == 0 or (log_dir / "misclassified_epoch0.png").stat().st_size > 0
