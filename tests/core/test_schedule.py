"""LR schedules: one-cycle stepped per batch, reduce-on-plateau."""

from __future__ import annotations

import zipfile

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from eva_lightning.core.schedules import Schedule
from eva_lightning.data import VisionDataModule
from tiny import TinyNet


class RecordLR(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def _fit(mnist_dir, schedule: Schedule, epochs: int, lr: float = 0.1) -> list[float]:
    rec = RecordLR()
    model = TinyNet(in_channels=1, lr=lr, schedule=schedule, optimizer=lambda p: torch.optim.SGD(p, lr=0.01))
    dm = VisionDataModule("mnist", data_dir=str(mnist_dir), batch_size=32)  # 256 / 32 = 8 steps an epoch
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec], limit_val_batches=1,
    )
    trainer.fit(model, dm)
    return rec.lrs


def test_one_cycle_peaks_at_first_step_of_peak_epoch_and_ends_at_start(mnist_dir):
    lrs = _fit(mnist_dir, Schedule(name="onecycle", peak_epoch=2, final_div_factor=1.0, div_factor=10), epochs=5)
    assert len(lrs) == 40
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert peak == 2 * 8, f"peak at step {peak}, expected the first step of epoch 2 (step 16)"
    assert lrs[peak] == pytest.approx(0.1, rel=1e-9)
    assert lrs[0] == pytest.approx(0.01, rel=1e-9)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1])), "LR must rise every step up to the peak"
    # one-cycle stepped per batch: the LR changes inside an epoch, not only between epochs
    assert len(set(lrs[17:24])) == 7
    # no annihilation: the LR of the last step equals the first
    assert lrs[-1] == pytest.approx(lrs[0], rel=1e-9)


def test_one_cycle_rejects_a_peak_outside_the_run(mnist_dir):
    from eva_lightning.core.errors import EvaError

    with pytest.raises(EvaError, match="peak_epoch"):
        _fit(mnist_dir, Schedule(name="onecycle", peak_epoch=7), epochs=3)


def test_reduce_on_plateau_lowers_lr_after_patience_flat_epochs():
    model = TinyNet(in_channels=1, schedule=Schedule(name="plateau", patience=2, factor=0.5),
                    optimizer=lambda p: torch.optim.SGD(p, lr=0.4))
    cfg = model.configure_optimizers()
    assert cfg["lr_scheduler"]["monitor"] == "val/loss"
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(5):
        sched.step(1.0)  # a flat val/loss
        seen.append(opt.param_groups[0]["lr"])
    # epoch 1 sets the best; 2 and 3 are flat epochs within patience; the 4th flat epoch drops it
    assert seen == [0.4, 0.4, 0.4, 0.2, 0.2]


def test_make_scheduler_is_the_one_cycle_both_loops_step():
    # what benchmarks/plain_loop.py builds without a trainer: 8 steps an epoch, 5 epochs, peak at epoch 2
    from eva_lightning.core.schedules import make_optimizer, make_scheduler

    schedule = Schedule(name="onecycle", peak_epoch=2, final_div_factor=1.0, div_factor=10)
    assert schedule.interval == "step"
    opt = make_optimizer(lambda p: torch.optim.SGD(p, lr=0.01), [torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler(opt, schedule, total_steps=40, epochs=5)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(range(40), key=lrs.__getitem__) == 16 and lrs[16] == pytest.approx(0.1, rel=1e-9)
    assert lrs[0] == pytest.approx(0.01, rel=1e-9) and lrs[-1] == pytest.approx(0.01, rel=1e-9)
    assert [Schedule(name=n).interval for n in ("none", "step", "cosine", "plateau")] == ["epoch", "epoch", "step", "plateau"]


def test_a_schedule_pickled_under_its_old_module_path_loads_with_weights_only(tmp_path):
    from eva_lightning.core import module

    assert module.Schedule is Schedule  # the old import path still works
    path = tmp_path / "hp.ckpt"
    torch.save({"hyper_parameters": {"schedule": Schedule(name="step", step_size=3)}}, path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["schedule"] == Schedule(name="step", step_size=3)
    # a checkpoint written before the move names eva_lightning.core.module.Schedule
    with zipfile.ZipFile(path) as z:
        names = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    assert b"eva_lightning.core.schedules" in names[pkl]
    names[pkl] = names[pkl].replace(b"eva_lightning.core.schedules", b"eva_lightning.core.module")
    renamed = tmp_path / "old.ckpt"
    with zipfile.ZipFile(renamed, "w", compression=zipfile.ZIP_STORED) as z:
        for n, data in names.items():
            z.writestr(n, data)
    assert torch.load(renamed, weights_only=True)["hyper_parameters"]["schedule"].step_size == 3


def test_norm_lr_scale_puts_norm_parameters_in_a_group_with_scaled_lr_and_decay():
    """airbench94's bias_scaler: norm layers' LR x scale and weight decay / scale, so lr*wd per step stays the same;
    the one-cycle peaks each group at its own LR. Scale 1 keeps the single group of every other config."""
    from eva_lightning.core.schedules import make_optimizer, make_scheduler, param_groups

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    factory = lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.85, nesterov=True, weight_decay=1e-3)  # noqa: E731
    assert len(make_optimizer(factory, param_groups(net)).param_groups) == 1
    opt = make_optimizer(factory, param_groups(net, 64.0), lr=1.5)
    rest, norm = opt.param_groups
    assert {id(p) for p in norm["params"]} == {id(net[1].weight), id(net[1].bias)}
    assert len(rest["params"]) == 4 and rest["lr"] == 1.5 and rest["weight_decay"] == 1e-3
    assert norm["lr"] == 96.0 and norm["weight_decay"] == pytest.approx(1e-3 / 64)
    assert norm["lr"] * norm["weight_decay"] == pytest.approx(rest["lr"] * rest["weight_decay"])
    sched = make_scheduler(opt, Schedule(name="onecycle", peak_epoch=2, div_factor=5), total_steps=40, epochs=5)
    peaks = [0.0, 0.0]
    for _ in range(40):
        peaks = [max(p, g["lr"]) for p, g in zip(peaks, opt.param_groups)]
        opt.step()
        sched.step()
    assert peaks == pytest.approx([1.5, 96.0])
    model = TinyNet(num_classes=10, in_channels=1, norm_lr_scale=64.0, optimizer=factory)
    groups = model.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == [0.01, 0.64] and groups[1]["params"][0] is model.net[1].weight
