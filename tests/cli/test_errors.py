"""Every bad input ends in one clear message, a non-zero exit, no traceback and nothing overwritten.

Each ``eva`` start costs seconds of imports on a small CPU, so the cases that fail before any
training run through ``eva_lightning.entry.main`` (the function behind ``python -m eva_lightning``)
one after another in one subprocess, and the runs that train are separate subprocesses started
side by side.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_CONFIG, eva_env, finish_main_cases, start_main_cases, write_folder, write_mnist

def _eva(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "eva_lightning", *args], cwd=cwd, env=eva_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """All bad-input runs of this module, started in parallel; results by case name."""
    base = tmp_path_factory.mktemp("errors")
    data = write_mnist(base / "data", n_train=128, n_test=64)
    tiny = base / "tiny.yaml"
    tiny.write_text(TINY_CONFIG.format(data_dir=data))
    text = tiny.read_text()
    files = {
        "malformed.yaml": "trainer:\n  max_epochs: [1\nmodel: {}\n",
        "unknown_key.yaml": text.replace("max_epochs: 1", "max_epoch: 1"),
        "wrong_type.yaml": text.replace("batch_size: 32", "batch_size: thirty-two"),
        "not_classifier.yaml": text.replace("class_path: tiny.TinyNet", "class_path: torch.nn.Linear"),
        "s4.yaml": text.replace("class_path: tiny.TinyNet", "class_path: eva_lightning.assignments.s5.S5Final"),
    }
    for name, content in files.items():
        (base / name).write_text(content)

    folders = {}
    for name in ("corrupt", "empty", "mismatch"):
        folders[name] = write_folder(base / name, per_class=(4, 2), size=16)
    (folders["corrupt"] / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    (folders["empty"] / "train" / "emu").mkdir()
    shutil.rmtree(folders["mismatch"] / "test" / "frog")
    folder = ["--trainer.fast_dev_run", "true", "--data.dataset", "folder", "--data.batch_size", "4", "--data.data_dir"]

    work = base / "work"  # cwd of the failing runs: must stay empty
    work.mkdir()
    cases = {
        "malformed": ["fit", "--config", str(base / "malformed.yaml")],
        "unknown_key": ["fit", "--config", str(base / "unknown_key.yaml")],
        "unknown_model_arg": ["fit", "--config", str(tiny), "--model.init_args.widht", "16"],
        "wrong_type": ["fit", "--config", str(base / "wrong_type.yaml")],
        "not_classifier": ["fit", "--config", str(base / "not_classifier.yaml")],
        "unknown_transform": ["fit", "--config", str(tiny), "--data.train_transforms", "[{name: HorizontalFlipp}]"],
        "unknown_transform_arg": ["fit", "--config", str(tiny), "--data.train_transforms",
                                  "[{name: Affine, rotate: 5, shera: 3}]"],
        "offline": ["fit", "--config", str(tiny), "--data.data_dir", str(base / "nowhere")],
        "empty_class": ["fit", "--config", str(tiny), *folder, str(folders["empty"])],
        "class_mismatch": ["fit", "--config", str(tiny), *folder, str(folders["mismatch"])],
        "sync_bn_cpu": ["fit", "--config", str(tiny), "--trainer.strategy", "ddp", "--trainer.devices", "2",
                        "--trainer.sync_batchnorm", "true"],
    }
    driver = start_main_cases(cases, work, "parse")
    # a schedule whose LR becomes infinite after epoch 0: the first step of epoch 1 ruins the weights
    nan_dir = base / "nan"
    nan_dir.mkdir()
    nan = _eva(["fit", "--config", str(tiny), "--trainer.max_epochs", "2",
                "--model.init_args.schedule", "{name: step, step_size: 1, gamma: .inf}"], nan_dir)
    corrupt_dir = base / "corrupt_run"
    corrupt_dir.mkdir()
    corrupt = _eva(["fit", "--config", str(tiny), *folder, str(folders["corrupt"])], corrupt_dir)

    results = finish_main_cases(*driver)
    results["work"] = work
    results["nan"] = dict(zip(("stdout", "stderr"), nan.communicate(timeout=600)), code=nan.returncode, dir=nan_dir)
    results["corrupt_image"] = dict(zip(("stdout", "stderr"), corrupt.communicate(timeout=600)),
                                    code=corrupt.returncode)

    # checkpoint cases, from the NaN run's last good checkpoint
    good = nan_dir / "lightning_logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert good.exists(), results["nan"]["stderr"][-3000:]
    truncated, garbage = base / "truncated.ckpt", base / "garbage.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    ckpt_cases = {
        "truncated_ckpt": ["fit", "--config", str(tiny), "--ckpt_path", str(truncated)],
        "garbage_ckpt": ["test", "--config", str(tiny), "--ckpt_path", str(garbage)],
        "missing_ckpt": ["validate", "--config", str(tiny), "--ckpt_path", str(base / "nope.ckpt")],
        "other_model_ckpt": ["test", "--config", str(base / "s4.yaml"), "--ckpt_path", str(good)],
    }
    before = {p: _md5(p) for p in (good, truncated, garbage)}
    results.update(finish_main_cases(*start_main_cases(ckpt_cases, work, "ckpt")))
    results["ckpt_unchanged"] = before == {p: _md5(p) for p in before}
    return results


def _clean_failure(result: dict, *needles: str) -> str:
    """Exit 2, no traceback, the message as `error: ...`, containing every needle."""
    assert result["traceback"] is None, result["traceback"]
    err = result["stderr"]
    assert result["code"] == 2, err
    assert "Traceback" not in err and "usage:" not in err, err
    assert err.strip().startswith("error: ") or "\nerror: " in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


@pytest.mark.parametrize(
    "case, needles",
    [
        ("malformed", ["malformed YAML in", "malformed.yaml", "line 2"]),
        ("unknown_key", ["unknown key 'trainer.max_epoch'", "did you mean 'trainer.max_epochs'"]),
        ("unknown_model_arg", ["unknown key 'widht' for tiny.TinyNet", "did you mean 'width'"]),
        ("wrong_type", ["data.batch_size", "int", "thirty-two"]),
        ("not_classifier", ["model: Import path torch.nn.Linear does not correspond to a subclass of ImageClassifier"]),
        ("unknown_transform", ["unknown albumentations transform 'HorizontalFlipp'", "Did you mean 'HorizontalFlip'"]),
        ("unknown_transform_arg", ["Affine has no argument 'shera'", "Did you mean 'shear'"]),
        ("offline", ["no data found in data_dir=", "nowhere", "--data.data_dir", "--data.download true"]),
        ("empty_class", ["class folder emu in", "is empty: add images or remove the folder"]),
        ("class_mismatch", ["train and test class folders differ", "['frog']"]),
        ("sync_bn_cpu", ["trainer.sync_batchnorm: true needs CUDA GPUs"]),
        ("truncated_ckpt", ["truncated.ckpt is truncated or corrupt"]),
        ("garbage_ckpt", ["garbage.ckpt is truncated or corrupt"]),
        ("missing_ckpt", ["nope.ckpt does not exist"]),
        ("other_model_ckpt", ["saved from tiny.TinyNet", "does not match the configured model",
                              "eva_lightning.assignments.s5.S5Final"]),
    ],
)
def test_bad_input_is_one_clear_message(runs, case, needles):
    _clean_failure(runs[case], *needles)


def test_failed_runs_write_nothing(runs):
    assert list(runs["work"].glob("lightning_logs")) == []  # no half-made run directory
    assert runs["ckpt_unchanged"]


def test_corrupt_image_is_skipped_with_one_warning_naming_it(runs):
    res = runs["corrupt_image"]
    assert res["code"] == 0, res["stderr"][-3000:]
    warnings = [line for line in res["stderr"].splitlines() if "broken.png" in line]
    assert len(warnings) == 1 and "skipping" in warnings[0] and "not a readable image" in warnings[0], warnings


def test_nan_loss_stops_with_epoch_step_and_cause_and_keeps_last_good_checkpoint(runs):
    res = runs["nan"]
    err = res["stderr"]
    assert res["code"] == 2 and "Traceback" not in err, err[-3000:]
    line = next(line for line in err.splitlines() if line.startswith("error: "))
    assert "the training loss became" in line and "at epoch 1, step" in line, line
    assert "learning rate that is too high" in line and "last good checkpoint is kept" in line, line
    run = res["dir"] / "lightning_logs" / "tiny" / "version_0"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # written before the loss went bad, never replaced by NaN weights
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_predict_converts_odd_sizes_and_channels(tmp_path):
    """Grey, RGBA and palette images of any size become the model's 1×28×28 input."""
    from eva_lightning.data import VisionDataModule

    images = tmp_path / "mine"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 50, 4), dtype=np.uint8), "RGBA").save(images / "rgba_70x50.png")
    Image.fromarray(rng.integers(0, 255, (9, 13), dtype=np.uint8)).save(images / "grey_9x13.png")
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).convert("P").save(images / "palette.gif")
    dm = VisionDataModule("mnist", data_dir=str(tmp_path), download=False, predict_dir=str(images), batch_size=8)
    dm.setup("predict")
    x, _ = next(iter(dm.predict_dataloader()))
    assert tuple(x.shape) == (3, 1, 28, 28) and torch.isfinite(x).all()
    assert [p.name for p in dm.predict_files] == ["grey_9x13.png", "palette.gif", "rgba_70x50.png"]
