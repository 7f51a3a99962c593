"""DDP on CPU (gloo): 2 processes equal 1 process on the same total batch; torchrun equals Lightning's launcher."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import TINY_CONFIG, eva_env, write_mnist, logged

TIMEOUT = 420  # s: a hang in a collective must fail the test, not the suite
DDP_CPU = ("--trainer.max_epochs", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu")


def _fit(cwd, config, *extra: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    cwd.mkdir()
    args = [sys.executable, *launcher, "-m", "eva_lightning", "fit", "--config", str(config), *DDP_CPU, *extra]
    return subprocess.Popen(args, cwd=cwd, env=eva_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Three runs side by side, each tiny: 1 process, 2 by Lightning's launcher, 2 by torchrun.

    The 1-process run goes through the same strategy, so all draw batches from DistributedSampler's
    permutation: a 2-process step sees the same 32 images split 16 + 16.
    """
    tmp_path = tmp_path_factory.mktemp("ddp")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(data_dir=write_mnist(tmp_path / "data")).replace(
        "  devices: 1\n", "  devices: 1\n  callbacks:\n    - class_path: eva_lightning.callbacks.images.MisclassifiedGrid\n"))
    procs = {
        "one": _fit(tmp_path / "one", config, "--trainer.devices", "1", "--data.batch_size", "32"),
        "two": _fit(tmp_path / "two", config, "--trainer.devices", "2", "--data.batch_size", "16"),
        # torchrun starts both processes itself; Lightning sees TORCHELASTIC_RUN_ID and launches nothing
        "torchrun": _fit(tmp_path / "torchrun", config, "--trainer.devices", "2", "--data.batch_size", "16",
                         launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")),
    }
    out = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            raise AssertionError(f"{name}: no result in {TIMEOUT} s (hang?)")
        assert proc.returncode == 0, f"{name}: {stderr[-3000:]}"
        run = tmp_path / name / "lightning_logs" / "tiny" / "version_0"
        acc = logged(run, "val/acc")
        out[name] = {
            "log": stdout + stderr,
            "run": run,
            "acc": list(acc.values()),
            "loss": list(logged(run, "val/loss").values()),
            "steps": list(acc),
        }
    return out


def test_two_processes_match_one_on_the_same_total_batch(runs):
    one, two = runs["one"], runs["two"]
    assert "MEMBER: 2/2" in two["log"] and "MEMBER: 1/1" in one["log"]
    assert one["steps"] == two["steps"] and len(one["steps"]) == 2, (one["steps"], two["steps"])  # same optimiser steps
    # BatchNorm statistics are per process (16 vs 32 images; SyncBatchNorm is CUDA-only), so the
    # runs differ a little; gradients are averaged over both ranks, so not by much
    assert abs(one["acc"][-1] - two["acc"][-1]) <= 0.1, (one["acc"], two["acc"])
    assert abs(one["loss"][-1] - two["loss"][-1]) <= 0.1 * one["loss"][-1], (one["loss"], two["loss"])
    # the figure callback ran once (rank 0), in the one run directory
    assert sorted(p.name for p in two["run"].glob("misclassified_epoch*.png")) == [
        "misclassified_epoch0.png", "misclassified_epoch1.png"]
    assert not (two["run"].parent / "version_1").exists()


def test_torchrun_gives_the_same_metrics_as_lightnings_launcher(runs):
    """``torchrun --nproc_per_node 2 -m eva_lightning fit ... --trainer.devices 2``: the same run."""
    two, torchrun = runs["two"], runs["torchrun"]
    assert "MEMBER: 2/2" in torchrun["log"]
    assert torchrun["steps"] == two["steps"]
    assert torchrun["acc"] == two["acc"]  # same seed, same shards, same gloo all-reduce: identical
    assert torchrun["loss"] == pytest.approx(two["loss"], rel=1e-6)
    assert (torchrun["run"] / "checkpoints" / "last.ckpt").is_file() and (torchrun["run"] / "report.md").is_file()
    assert sorted(p.name for p in torchrun["run"].glob("misclassified_epoch*.png")) == [
        "misclassified_epoch0.png", "misclassified_epoch1.png"]
    assert not (torchrun["run"].parent / "version_1").exists()  # one run directory for both processes
