"""Lightning DDP on CPU (gloo): 2 processes equal 1 process on the same total batch."""

from __future__ import annotations

import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY_CONFIG, eva_env

TIMEOUT = 420  # s: a hang in a collective must fail the test, not the suite


def _fit(cwd, config, *extra: str) -> subprocess.Popen:
    cwd.mkdir()
    args = [sys.executable, "-m", "eva_lightning", "fit", "--config", str(config), "--trainer.max_epochs", "2",
            "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", *extra]
    return subprocess.Popen(args, cwd=cwd, env=eva_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_match_one_on_the_same_total_batch(tmp_path, mnist_dir):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(data_dir=mnist_dir).replace(
        "  devices: 1\n", "  devices: 1\n  callbacks:\n    - class_path: eva_lightning.callbacks.images.MisclassifiedGrid\n"))
    # one process through the same strategy, so both draw batches from DistributedSampler's
    # permutation: the 2-process step sees the same 32 images split 16 + 16
    one = _fit(tmp_path / "one", config, "--trainer.devices", "1", "--data.batch_size", "32")
    two = _fit(tmp_path / "two", config, "--trainer.devices", "2", "--data.batch_size", "16")
    outs = {}
    for name, proc in (("one", one), ("two", two)):
        try:
            outs[name] = proc.communicate(timeout=TIMEOUT)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"{name}: no result in {TIMEOUT} s (hang?)")
        assert proc.returncode == 0, outs[name][-3000:]
    assert "MEMBER: 2/2" in outs["two"] and "MEMBER: 1/1" in outs["one"]

    runs = {name: tmp_path / name / "lightning_logs" / "tiny" / "version_0" for name in ("one", "two")}
    acc, loss, steps = {}, {}, {}
    for name, run in runs.items():
        events = EventAccumulator(str(run))
        events.Reload()
        acc[name] = [e.value for e in events.Scalars("val/acc")]
        loss[name] = [e.value for e in events.Scalars("val/loss")]
        steps[name] = [e.step for e in events.Scalars("val/acc")]
    assert steps["one"] == steps["two"] and len(steps["one"]) == 2, steps  # same optimiser steps per epoch
    # BatchNorm statistics are per process (16 vs 32 images; SyncBatchNorm is CUDA-only), so the
    # runs differ a little; gradients are averaged over both ranks, so not by much
    assert abs(acc["one"][-1] - acc["two"][-1]) <= 0.1, acc
    assert abs(loss["one"][-1] - loss["two"][-1]) <= 0.1 * loss["one"][-1], loss
    # the figure callback ran once (rank 0), in the one run directory
    assert sorted(p.name for p in runs["two"].glob("misclassified_epoch*.png")) == [
        "misclassified_epoch0.png", "misclassified_epoch1.png"]
    assert not (tmp_path / "two" / "lightning_logs" / "tiny" / "version_1").exists()
