"""Code that behaves differently on a GPU, run on the CPU (docs/devices.md lists every such place)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eva_lightning.callbacks import FiniteLossGuard, RngState
from eva_lightning.core.errors import EvaError


class GoesBad(L.LightningModule):
    """A constant loss of 1 that becomes NaN (or inf) from global step ``bad_from`` on."""

    def __init__(self, bad_from: int, value: float = float("nan")) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.bad_from, self.value = bad_from, value
        self.steps_seen = 0

    def training_step(self, batch, batch_idx):
        self.steps_seen += 1
        bad = self.global_step >= self.bad_from
        return self.w.sum() * 0 + torch.tensor(self.value if bad else 1.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(12, 1)), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module: L.LightningModule, guard: FiniteLossGuard, epochs: int = 2) -> None:
    L.Trainer(accelerator="cpu", max_epochs=epochs, callbacks=[guard], logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(module)


def test_finite_loss_guard_reads_the_device_record_every_n_steps():
    # the GPU's path: the first bad step is recorded on the device, read after batch 7 (every 4th);
    # Lightning's global_step already counts the batch's optimiser step there (batch 5 -> step 6)
    module = GoesBad(bad_from=5)
    with pytest.raises(EvaError, match=r"became NaN at epoch 0, step 6 \(batch 5\)"):
        fit(module, FiniteLossGuard(check_every_n_steps=4))
    assert module.steps_seen == 8


def test_finite_loss_guard_reads_at_epoch_end_before_checkpoints():
    # no read falls due inside the 12-batch epoch: the epoch-end read (before ModelCheckpoint) stops it
    module = GoesBad(bad_from=3, value=float("inf"))
    with pytest.raises(EvaError, match=r"became inf at epoch 0, step 4 \(batch 3\)"):
        fit(module, FiniteLossGuard(check_every_n_steps=50))
    assert module.steps_seen == 12


def test_finite_loss_guard_lets_a_finite_run_finish_and_rejects_a_zero_interval():
    module = GoesBad(bad_from=10**9)
    fit(module, FiniteLossGuard(check_every_n_steps=1))
    assert module.steps_seen == 24
    with pytest.raises(EvaError, match="at least 1"):
        FiniteLossGuard(check_every_n_steps=0)


class FakeCuda(SimpleNamespace):
    """torch.cuda's RNG functions for ``n`` devices, each state a tensor, set_rng_state_all recorded."""

    def __init__(self, n: int) -> None:
        super().__init__(states=[torch.full((4,), i, dtype=torch.uint8) for i in range(n)], restored=None)

    def install(self, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(torch.cuda, "is_available", lambda: len(self.states) > 0)
        mp.setattr(torch.cuda, "device_count", lambda: len(self.states))
        mp.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        mp.setattr(torch.cuda, "set_rng_state_all", lambda states: setattr(self, "restored", [s.clone() for s in states]))


def seed(n: int) -> None:
    torch.manual_seed(n), np.random.seed(n), random.seed(n)


@pytest.mark.parametrize("saved_on, restored_on, restored", [(2, 2, True), (2, 1, False), (0, 2, False)])
def test_rng_state_keeps_the_cuda_generators(saved_on, restored_on, restored):
    # the CUDA branch of RngState on the CPU: torch.cuda's RNG functions replaced by a fake with n devices
    seed(1)
    saver = FakeCuda(saved_on)
    with pytest.MonkeyPatch.context() as mp:
        saver.install(mp)
        state = RngState().state_dict()
    assert ("torch.cuda" in state["rng"]) == (saved_on > 0)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    seed(2)
    loader = FakeCuda(restored_on)
    with pytest.MonkeyPatch.context() as mp:
        loader.install(mp)
        RngState().load_state_dict(state)
    torch.testing.assert_close(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    # another machine's device count (or none saved): this machine's CUDA seeds stay as they are
    if restored:
        assert [s.tolist() for s in loader.restored] == [s.tolist() for s in saver.states]
    else:
        assert loader.restored is None
