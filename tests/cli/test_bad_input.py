"""The bad-input sweep: impossible numbers, settings this machine cannot run, contradictory settings.

Every case runs ``eva fit`` in-process (``eva_lightning.entry.main``, the function behind
``python -m eva_lightning``) from an empty working directory, and must end with exit status 2 and
exactly one ``error: ...`` line that names the option (and the value), no traceback, and nothing
written: the checks run before the Trainer starts, so no ``lightning_logs/`` or other file appears.
"""

from __future__ import annotations

import os

import pytest
import torch

from conftest import TINY_CONFIG, write_mnist
from eva_lightning.entry import main
from eva_lightning.data import VisionDataModule, sources
from eva_lightning.core.errors import EvaError

S5, S7, S8, S11 = (f"eva_lightning.assignments.{m}" for m in ("s5.S5Model", "s7.S7Model", "s8.S8Model", "s11.S11Model"))
CALLBACKS = "eva_lightning.callbacks"
SCHEDULE = "--model.init_args.schedule"
OPTIMIZER = "--model.init_args.optimizer.init_args"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has Apple MPS")
HAS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TOO_MANY_CPUS = str((os.cpu_count() or 1) + 1)
TOO_MANY_GPUS = str(torch.cuda.device_count() + 1)


def case(name: str, args: list[str], *needles: str, marks=()):
    return pytest.param(args, needles, id=name, marks=marks)


IMPOSSIBLE_NUMBERS = [
    # data
    case("seed_negative", ["--seed_everything", "-1"], "seed_everything=-1", "from 0 to 2**32 - 1"),
    case("batch_size_0", ["--data.batch_size", "0"], "data.batch_size=0", "at least 1"),
    case("num_workers_negative", ["--data.num_workers", "-1"], "data.num_workers=-1"),
    case("image_size_0", ["--data.image_size", "0"], "data.image_size=0"),
    case("std_0", ["--data.std", "[0.0]"], "data.std=[0.0]", "> 0"),
    # model (ImageClassifier)
    case("l1_negative", ["--model.init_args.l1", "-0.1"], "model.init_args.l1=-0.1", ">= 0"),
    case("label_smoothing_1", ["--model.init_args.label_smoothing", "1.0"], "model.init_args.label_smoothing=1.0", "[0, 1)"),
    case("lr_0", ["--model.init_args.lr", "0"], "model.init_args.lr=0", "> 0"),
    case("optimizer_null", ["--model.init_args.optimizer", "null"], "model.init_args.optimizer=None", "torch.optim.SGD"),
    case("optimizer_lr_negative", [f"{OPTIMIZER}.lr", "-0.1"], "model.init_args.optimizer.init_args", "learning rate: -0.1"),
    case("optimizer_lr_0", [f"{OPTIMIZER}.lr", "0"], "model.init_args.optimizer.init_args.lr=0", "trains nothing"),
    case("momentum_1.5", [f"{OPTIMIZER}.momentum", "1.5"], "model.init_args.optimizer.init_args.momentum=1.5", "[0, 1)"),
    case("weight_decay_negative", [f"{OPTIMIZER}.weight_decay", "-1"], "model.init_args.optimizer.init_args", "weight_decay", "-1"),
    # schedule fields (Schedule.__post_init__)
    case("step_size_0", [f"{SCHEDULE}.name", "step", f"{SCHEDULE}.step_size", "0"], "schedule.step_size=0", "at least 1"),
    case("gamma_0", [f"{SCHEDULE}.name", "step", f"{SCHEDULE}.gamma", "0"], "schedule.gamma=0", "> 0"),
    case("factor_1.5", [f"{SCHEDULE}.name", "plateau", f"{SCHEDULE}.factor", "1.5"], "schedule.factor=1.5", "(0, 1)"),
    case("peak_epoch_0", [f"{SCHEDULE}.name", "onecycle", f"{SCHEDULE}.peak_epoch", "0"], "schedule.peak_epoch=0"),
    case("div_factor_0.5", [f"{SCHEDULE}.div_factor", "0.5"], "schedule.div_factor=0.5", ">= 1"),
    case("final_div_factor_0", [f"{SCHEDULE}.final_div_factor", "0"], "schedule.final_div_factor=0", "> 0"),
    # assignment modules
    case("s5_dropout_negative", ["--model.class_path", S5, "--model.init_args.dropout", "-0.1"], "model.init_args.dropout=-0.1", "[0, 1)"),
    case("s5_dropout_1", ["--model.class_path", S5, "--model.init_args.dropout", "1.0"], "model.init_args.dropout=1.0"),
    case("s5_virtual_batch_0", ["--model.class_path", S5, "--model.init_args.norm", "gbn", "--model.init_args.virtual_batch_size", "0"],
         "model.init_args.virtual_batch_size=0"),
    case("s7_dropout_1.5", ["--model.class_path", S7, "--model.init_args.dropout", "1.5"], "model.init_args.dropout=1.5"),
    case("s8_width_0", ["--model.class_path", S8, "--model.init_args.width", "0"], "model.init_args.width=0"),
    case("s11_logit_scale_0", ["--model.class_path", S11, "--model.init_args.logit_scale", "0"], "model.init_args.logit_scale=0"),
    # callbacks
    case("misclassified_every_0", [f"--trainer.callbacks+={CALLBACKS}.MisclassifiedGrid", "--trainer.callbacks.every_n_epochs", "0"],
         "MisclassifiedGrid.every_n_epochs=0", "at least 1"),
    case("gradcam_num_images_0", [f"--trainer.callbacks+={CALLBACKS}.GradCAMGrid", "--trainer.callbacks.num_images", "0"],
         "GradCAMGrid.num_images=0"),
    case("confusion_normalize", [f"--trainer.callbacks+={CALLBACKS}.ConfusionMatrixFigure", "--trainer.callbacks.normalize", "rows"],
         "ConfusionMatrixFigure.normalize='rows'", "true, pred, all, none"),
    case("lr_range_min_above_max", [f"--trainer.callbacks+={CALLBACKS}.LRRangeTest", "--trainer.callbacks.min_lr", "1",
                                    "--trainer.callbacks.max_lr", "0.1"], "min_lr=1", "max_lr=0.1", "0 < min_lr < max_lr"),
    case("lr_range_num_training_1", [f"--trainer.callbacks+={CALLBACKS}.LRRangeTest", "--trainer.callbacks.num_training", "1"],
         "num_training=1", "at least 2"),
    case("ema_decay_1", [f"--trainer.callbacks+={CALLBACKS}.WarmupEMA", "--trainer.callbacks.decay", "1.5"], "decay"),
    case("ckpt_best_without_held_out_split", ["--ckpt_path", "best"], "--ckpt_path best", "data.val_split"),
    case("literal_choice", ["--model.init_args.schedule.anneal", "cosine"], "schedule.anneal", "cosine", "'linear', 'cos'"),
    # trainer
    case("max_epochs_negative", ["--trainer.max_epochs", "-3"], "trainer.max_epochs=-3", "PositiveInt (v>0) or one of -1"),
    case("max_steps_0", ["--trainer.max_steps", "0"], "trainer.max_steps=0"),
    case("limit_train_batches_negative", ["--trainer.limit_train_batches", "-1"], "invalid value -1 for limit_train_batches"),
    case("limit_val_batches_1.5", ["--trainer.limit_val_batches", "1.5"], "trainer.limit_val_batches=1.5", "ClosedUnitInterval (v>=0 and v<=1)"),
    case("check_val_every_0", ["--trainer.check_val_every_n_epoch", "0"], "trainer.check_val_every_n_epoch=0"),
    case("accumulate_0", ["--trainer.accumulate_grad_batches", "0"], "trainer.accumulate_grad_batches=0"),
    case("gradient_clip_negative", ["--trainer.gradient_clip_val", "-1"], "trainer.gradient_clip_val=-1"),
]

WRONG_MACHINE = [
    case("accelerator_gpu", ["--trainer.accelerator", "gpu"], "trainer.accelerator=gpu", "--trainer.accelerator cpu", marks=NO_CUDA),
    case("accelerator_cuda", ["--trainer.accelerator", "cuda"], "trainer.accelerator=cuda", "needs a CUDA GPU", marks=NO_CUDA),
    case("accelerator_mps", ["--trainer.accelerator", "mps"], "trainer.accelerator=mps", marks=NO_MPS),
    case("accelerator_unknown", ["--trainer.accelerator", "quantum"], "trainer.accelerator=quantum", "is unknown", "cpu"),
    case("devices_0", ["--trainer.devices", "0"], "trainer.devices=0"),
    case("devices_more_than_cpus", ["--trainer.devices", TOO_MANY_CPUS], f"trainer.devices={TOO_MANY_CPUS}",
         f"--trainer.devices {os.cpu_count()} or fewer"),
    case("devices_list_on_cpu", ["--trainer.devices", "[0, 1]"], "trainer.devices=[0, 1]", "number of processes"),
    case("devices_more_than_gpus", ["--trainer.accelerator", "cuda", "--trainer.devices", TOO_MANY_GPUS],
         f"trainer.devices={TOO_MANY_GPUS}", "CUDA devices", marks=HAS_CUDA),
    case("precision_16_mixed_on_cpu", ["--trainer.precision", "16-mixed"], "trainer.precision=16-mixed", "bf16-mixed"),
    case("precision_unknown", ["--trainer.precision", "17"], "trainer.precision", "17", "'bf16-mixed'"),
]

CONTRADICTIONS = [
    case("max_epochs_0", ["--trainer.max_epochs", "0"], "trainer.max_epochs=0", "PositiveInt (v>0)"),
    case("peak_epoch_after_the_run", [f"{SCHEDULE}.name", "onecycle", f"{SCHEDULE}.peak_epoch", "5", "--trainer.max_epochs", "3"],
         "schedule.peak_epoch=5", "trainer.max_epochs=3", "below 3"),
    case("peak_epoch_at_the_end", [f"{SCHEDULE}.name", "onecycle", f"{SCHEDULE}.peak_epoch", "1"], "schedule.peak_epoch=1",
         "trainer.max_epochs=1"),
    case("ghost_batch_not_smaller_than_batch", ["--model.class_path", S5, "--model.init_args.norm", "gbn",
                                                "--model.init_args.virtual_batch_size", "32"],
         "model.init_args.virtual_batch_size=32", "data.batch_size=32", "plain BatchNorm"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input")
    config = base / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(data_dir=write_mnist(base / "data", n_train=64, n_test=32)))
    return config


@pytest.mark.parametrize("args, needles", IMPOSSIBLE_NUMBERS + WRONG_MACHINE + CONTRADICTIONS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, needles, tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # empty: whatever a run would write lands here
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(tiny), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err and "usage:" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    assert list(tmp_path.iterdir()) == []  # no lightning_logs/, no checkpoints/, nothing


def test_the_same_settings_in_range_still_build(tiny, tmp_path, monkeypatch):
    """The checks reject only what cannot work: the edges of each range still build."""
    from eva_lightning.cli import EvaCLI

    monkeypatch.chdir(tmp_path)
    cli = EvaCLI(args=[
        "--config", str(tiny), "--trainer.logger", "false",
        "--model.class_path", S5, "--model.init_args.norm", "gbn", "--model.init_args.virtual_batch_size", "16",
        "--model.init_args.dropout", "0", "--model.init_args.l1", "0", "--model.init_args.label_smoothing", "0.99",
        f"{SCHEDULE}.name", "onecycle", f"{SCHEDULE}.peak_epoch", "1.5", f"{SCHEDULE}.div_factor", "1",
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "0.5", "--trainer.limit_val_batches", "3",
        "--trainer.devices", str(os.cpu_count()), "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "-1",
        "--data.num_workers", "0", "--data.batch_size", "32",
    ], run=False)
    assert cli.model.schedule.peak_epoch == 1.5 and cli.trainer.max_epochs == 2
    assert list(tmp_path.iterdir()) == []


def test_offline_message_suggests_the_download_flag_only_when_it_was_off(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(sources, "load_torchvision", offline)
    with pytest.raises(EvaError) as failed:
        VisionDataModule("mnist", data_dir=str(tmp_path / "none"), download=True).prepare_data()
    assert "the download failed" in str(failed.value) and "--data.download true" not in str(failed.value)
    assert "--data.data_dir" in str(failed.value)
    with pytest.raises(EvaError) as disabled:
        VisionDataModule("mnist", data_dir=str(tmp_path / "none"), download=False).prepare_data()
    assert "download is disabled" in str(disabled.value) and "--data.download true" in str(disabled.value)
