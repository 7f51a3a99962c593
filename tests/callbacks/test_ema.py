"""WarmupEMA (EMA of the weights with timm's decay warm-up) and ImageClassifier.setup (no configure_model)."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

from eva_lightning.callbacks import WarmupEMA
from eva_lightning.callbacks.ema import cubic_decay, cubic_ema_multi_avg_fn, ema_decay, warmup_ema_multi_avg_fn
from eva_lightning.core.errors import EvaError
from conftest import ROOT
from tiny import TinyNet



def pattern_data(n: int, seed: int) -> TensorDataset:
    """MNIST-sized images whose label is the place of a bright square (as tests/conftest.py writes)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 60, (n, 1, 28, 28)).astype(np.float32)
    for i, c in enumerate(y):
        r, k = divmod(int(c), 4)
        x[i, 0, r * 7 : (r + 1) * 7, k * 7 : (k + 1) * 7] = 230
    return TensorDataset(torch.from_numpy(x / 255.0), torch.from_numpy(y))


def tiny_model(**kwargs) -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(num_classes=10, in_channels=1, optimizer=lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9), **kwargs)


def fit(model, callbacks, max_epochs=1, ckpt_path=None, **trainer_kwargs) -> L.Trainer:
    """One epoch = 64 steps of 32 on 2,048 images, validation on 256 (no shuffling: runs repeat exactly)."""
    trainer = L.Trainer(
        max_epochs=max_epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, num_sanity_val_steps=0,
        **{"enable_checkpointing": False, **trainer_kwargs},
    )
    train = DataLoader(pattern_data(2048, 0), batch_size=32, shuffle=False)
    trainer.fit(model, train, DataLoader(pattern_data(256, 1), batch_size=64), ckpt_path=ckpt_path)
    return trainer


def test_decay_schedule():
    assert ema_decay(1, 0.998) == 2 / 11
    assert ema_decay(80, 0.998) == pytest.approx(0.9)
    assert ema_decay(4489, 0.998) < 0.998
    assert ema_decay(4490, 0.998) == pytest.approx(0.998) and ema_decay(10**6, 0.998) == 0.998
    with pytest.raises(EvaError, match="decay"):
        WarmupEMA(decay=1.5)


def test_update_follows_the_warmup_formula():
    """AveragedModel with the callback's update: the first update copies, then ema = d·ema + (1-d)·current."""
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).double()
    avg = AveragedModel(model, use_buffers=True, multi_avg_fn=warmup_ema_multi_avg_fn(0.5))
    expected = None
    for n in range(6):
        with torch.no_grad():
            model[0].weight.fill_(float(n + 1) ** 2)
            model[1].num_batches_tracked.fill_(10 * n)
        avg.update_parameters(model)
        current = float(n + 1) ** 2
        expected = current if n == 0 else ema_decay(n, 0.5) * expected + (1 - ema_decay(n, 0.5)) * current
        torch.testing.assert_close(avg.module[0].weight, torch.full((2, 3), expected, dtype=torch.float64))
        assert int(avg.module[1].num_batches_tracked) == 10 * n  # integer buffers follow the model
    # n = 1..5 at decay 0.5: the warm-up (2/11, 3/12, 4/13) then the cap 0.5 (n >= 8 would be 0.5 anyway)
    assert [ema_decay(n, 0.5) for n in (1, 2, 3, 9)] == [2 / 11, 3 / 12, 4 / 13, 0.5]


def test_cubic_update_follows_airbench_schedule():
    """warmup: cubic, every 5 steps of 100: the update after n earlier ones (step 5(n+1)) uses 0.7738·(5(n+1)/100)³."""
    model = nn.Linear(2, 1, bias=False).double()
    avg = AveragedModel(model, multi_avg_fn=cubic_ema_multi_avg_fn(0.7738, 5, lambda: 100))
    expected = None
    for n in range(8):
        with torch.no_grad():
            model.weight.fill_(float(n + 1))
        avg.update_parameters(model)
        d = cubic_decay(5 * (n + 1), 100, 0.7738)
        expected = n + 1.0 if n == 0 else d * expected + (1 - d) * (n + 1)
        torch.testing.assert_close(avg.module.weight, torch.full((1, 2), expected, dtype=torch.float64))
    assert cubic_decay(100, 100, 0.7738) == 0.7738 and cubic_decay(50, 100, 0.8) == pytest.approx(0.1)


class AfterEMA(L.Callback):
    """Listed after the EMA: after each step, the update count and whether the live weights are the average."""

    def __init__(self, ema: WarmupEMA) -> None:
        self.ema, self.seen = ema, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        average = self.ema._average_model
        same = all(torch.equal(a, c) for a, c in zip(average.module.parameters(), pl_module.parameters()))
        self.seen.append((trainer.global_step, int(average.n_averaged), same))


def test_lookahead_every_5_steps_restarts_training_from_the_average():
    ema = WarmupEMA(decay=0.7738, every_n_steps=5, warmup="cubic", lookahead=True)
    probe = AfterEMA(ema)
    model = tiny_model()
    fit(model, [ema, probe])  # 64 steps
    assert ema._total_steps == 64
    assert [n for _, n, _ in probe.seen] == [step // 5 for step, _, _ in probe.seen]
    assert [same for *_, same in probe.seen] == [step % 5 == 0 for step, _, _ in probe.seen]
    for a, c in zip(ema._average_model.module.parameters(), model.parameters()):
        torch.testing.assert_close(c, a)  # fit ends on the average (steps 61-64 dropped, as airbench's last update)
    # it learns: a fresh model's first epoch validates far above chance (0.1)
    assert fit(tiny_model(), [WarmupEMA(decay=0.7738, every_n_steps=5, warmup="cubic", lookahead=True)],
               max_epochs=1).callback_metrics["val/acc"] > 0.3
    with pytest.raises(EvaError, match="every_n_steps"):
        WarmupEMA(every_n_steps=0)


def test_first_epoch_validates_a_trained_model():
    """After one 64-step epoch the warm-up EMA is a real model; Lightning's plain EMA(0.998) is still the init."""
    warm = fit(tiny_model(), [WarmupEMA(decay=0.998)]).callback_metrics["val/acc"].item()
    plain = fit(tiny_model(), [EMAWeightAveraging(decay=0.998)]).callback_metrics["val/acc"].item()
    assert plain < 0.2  # chance is 0.1
    assert warm > 0.45


def test_checkpoint_saves_and_restores_the_average(tmp_path):
    """last.ckpt holds the EMA (and its update count); a resumed run ends exactly where an uninterrupted one does."""
    straight = tiny_model()
    fit(straight, [WarmupEMA(decay=0.998)], max_epochs=2)

    first = tiny_model()
    ckpt_dir = tmp_path / "ckpt"
    fit(first, [WarmupEMA(decay=0.998), ModelCheckpoint(dirpath=ckpt_dir, save_last=True)], enable_checkpointing=True)
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert int(ckpt["averaging_state"]["n_averaged"]) == 64
    w = "net.0.weight"
    assert not torch.equal(ckpt["state_dict"][w], ckpt["current_model_state"][w])  # the EMA is the state_dict
    torch.testing.assert_close(ckpt["state_dict"][w], first.state_dict()[w])  # fit end copies the EMA in

    resumed = TinyNet(num_classes=10, in_channels=1, optimizer=lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9))
    fit(resumed, [WarmupEMA(decay=0.998)], max_epochs=2, ckpt_path=ckpt_dir / "last.ckpt")
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0, msg=k)


class Probe(TinyNet):
    """Checks, when the optimiser is built, that setup() already applied channels_last and compile."""

    def configure_optimizers(self):
        assert self.net[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert "_compiled" in self.__dict__
        self.optimizers_built = getattr(self, "optimizers_built", 0) + 1
        return super().configure_optimizers()


def test_no_weight_averaging_warning_and_layout_still_applies(monkeypatch):
    compiled = []

    def fake_compile(net):  # torch.compile itself takes minutes on a CPU; record that it is asked for
        compiled.append(net)
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch.manual_seed(0)
    model = Probe(
        num_classes=10, in_channels=1, optimizer=lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9),
        channels_last=True, compile=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, [WarmupEMA(decay=0.998)], limit_train_batches=4, limit_val_batches=1)
        fit(model, [WarmupEMA(decay=0.998)], limit_train_batches=4, limit_val_batches=1)  # setup again: idempotent
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "configure_model" in m or "sharding" in m], messages
    assert model.optimizers_built == 2
    assert compiled == [model.net]  # compiled once, the plain network
    assert model.net[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_ema_configs_use_the_warmup():
    """Every shipped config that averages the weights uses WarmupEMA (s5.yaml, make run's config, does)."""
    found = {}
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        trainer = yaml.safe_load(path.read_text()).get("trainer") or {}
        for cb in trainer.get("callbacks") or []:
            if "EMA" in cb["class_path"] or "WeightAveraging" in cb["class_path"]:
                found[path.name] = cb["class_path"]
    assert "s5.yaml" in found
    assert set(found.values()) == {"eva_lightning.callbacks.WarmupEMA"}, found
