"""Resume after SIGKILL equals the uninterrupted run; checkpoint writes are atomic."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import eva_env, logged
from eva_lightning.cli import EvaCLI
from eva_lightning.core.errors import EvaError
from tiny import PAUSE_ENV

RESUME_CONFIG = """\
seed_everything: 7
trainer:
  max_epochs: 4
  accelerator: cpu
  devices: 1
  deterministic: true
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.EarlyStopping
      init_args: {{monitor: val/loss, patience: 20}}
    - class_path: tiny.PauseForKill
model:
  class_path: tiny.TinyNet
  init_args:
    optimizer:
      class_path: torch.optim.SGD
      init_args: {{lr: 0.2, momentum: 0.9}}
    schedule: {{name: onecycle, peak_epoch: 1}}
data:
  dataset: mnist
  data_dir: {data_dir}
  download: false
  batch_size: 32
"""


def _scalars(run: Path, tag: str) -> dict[int, float]:
    return logged(run, tag)  # the killed run's orphaned steps: the resumed run's win


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, mnist_dir, monkeypatch, lightning_log):
    config = tmp_path / "resume.yaml"
    config.write_text(RESUME_CONFIG.format(data_dir=mnist_dir))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir()
    killed.mkdir()
    marker = tmp_path / "paused"
    args = [sys.executable, "-m", "eva_lightning", "fit", "--config", str(config)]
    # the uninterrupted run and the run to be killed, side by side
    ref = subprocess.Popen(args, cwd=straight, env=eva_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(args, cwd=killed, env=eva_env({PAUSE_ENV: str(marker)}), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the run never reached epoch 3"
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert victim.returncode == -signal.SIGKILL
    run = killed / "lightning_logs" / "resume" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # end of epoch 2

    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-3000:]
    monkeypatch.chdir(killed)  # the resumed run in-process: the kill is what needs a process of its own
    EvaCLI(args=["fit", "--config", str(config), "--ckpt_path", "last"])
    assert "resuming from lightning_logs/resume/version_0/checkpoints/last.ckpt" in lightning_log.text
    assert not (killed / "lightning_logs" / "resume" / "version_1").exists()  # logs continue in the old run

    ref_run = straight / "lightning_logs" / "resume" / "version_0"
    a = torch.load(ref_run / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3 and a["global_step"] == b["global_step"] == 32
    for key, value in a["state_dict"].items():  # bitwise on CPU
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 32
    early = next(k for k in a["callbacks"] if k.startswith("EarlyStopping"))
    assert a["callbacks"][early] == b["callbacks"][early]
    ckpt_cb = next(k for k in a["callbacks"] if k.startswith("ModelCheckpoint"))
    assert a["callbacks"][ckpt_cb]["best_model_score"] == b["callbacks"][ckpt_cb]["best_model_score"]

    ref_acc, res_acc = _scalars(ref_run, "val/acc"), _scalars(run, "val/acc")
    assert ref_acc == res_acc and len(ref_acc) == 4
    ref_lr, res_lr = _scalars(ref_run, "lr"), _scalars(run, "lr")
    assert ref_lr == res_lr and len(ref_lr) == 32  # the one-cycle LR at every step, across the kill


def test_checkpoint_write_failure_keeps_previous_file(tmp_path, monkeypatch):
    from eva_lightning.core import checkpoints as safety

    io = safety.SafeCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)

    def fail_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safety.torch, "save", fail_midway)
    with pytest.raises(EvaError, match="the disk is full: could not write .*last.ckpt .*previous checkpoint is kept"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, target)
    monkeypatch.undo()
    back = io.load_checkpoint(target)
    assert back["epoch"] == 1 and torch.equal(back["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


KILL_WRITER = """
import sys, torch
from eva_lightning.core.checkpoints import SafeCheckpointIO
io = SafeCheckpointIO()
big = torch.arange(30_000_000, dtype=torch.float32)  # 120 MB: a write long enough to be caught
io.save_checkpoint({"state_dict": {"w": big[:10]}, "epoch": 0}, sys.argv[1])
print("first", flush=True)
for epoch in range(1, 1000):
    io.save_checkpoint({"state_dict": {"w": big}, "epoch": epoch}, sys.argv[1])
"""


def test_sigkill_during_checkpoint_write_leaves_a_loadable_last_ckpt(tmp_path):
    target = tmp_path / "last.ckpt"
    tmp = tmp_path / ".last.ckpt.tmp"
    for _attempt in range(3):  # the kill must land while the temporary file is part-written
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILL_WRITER), str(target)], env=eva_env(),
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "first"
        deadline = time.time() + 60
        while time.time() < deadline and not (tmp.exists() and 0 < tmp.stat().st_size < 100_000_000):
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        landed = tmp.exists()
        ckpt = torch.load(target, weights_only=True)  # always a complete checkpoint, old or new
        assert ckpt["state_dict"]["w"][:10].tolist() == list(range(10))
        if landed:
            break
    assert landed, "no kill landed during a write"
