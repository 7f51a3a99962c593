"""Faults round 3 (issue #36): the disk, the editor, the scheduler. Each case ends in one line (or works), never a
stack trace, and loses no work. Everything runs in-process through ``eva_lightning.entry.main`` on tiny data."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest
import torch

from conftest import TINY_CONFIG, write_mnist, logged
from eva_lightning.entry import main
from tiny import SIGTERM_ENV

RUN = Path("lightning_logs") / "tiny" / "version_0"
ONE_CYCLE = "{name: onecycle, peak_epoch: 1}"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("faults") / "data", n_train=128, n_test=64)


@pytest.fixture
def tiny(tmp_path, data, monkeypatch) -> Path:
    """``tiny.yaml`` (2 epochs of 4 batches, one-cycle) in an empty working directory."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "tiny.yaml"
    text = TINY_CONFIG.format(data_dir=data).replace("max_epochs: 1", "max_epochs: 2")
    text = text.replace("init_args:\n    optimizer:", f"init_args:\n    schedule: {ONE_CYCLE}\n    optimizer:")
    config.write_text(text + "  train_transforms: [{name: Rotate, limit: 10, p: 1.0}, {name: Normalize}]\n")
    return config


def eva(*argv: str, capsys) -> tuple[int, str]:
    """``eva ARGV`` in-process: (exit status, stderr); any exception other than SystemExit fails the test."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(("error: ", "stopped: "))]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- continuing a finished run for longer
def test_a_one_cycle_run_cannot_be_stretched_and_weights_from_starts_a_new_run(tiny, capsys):
    assert eva("fit", "--config", str(tiny), capsys=capsys)[0] == 0
    before = (RUN / "checkpoints" / "last.ckpt").read_bytes()
    code, err = eva("fit", "--config", str(tiny), "--ckpt_path", "last", "--trainer.max_epochs", "4", capsys=capsys)
    line = one_error(err)
    assert code == 2 and "one-cycle schedule spans 8 steps" in line and "would need 16" in line, line
    assert "--weights_from" in line and "cannot be stretched" in line
    assert (RUN / "checkpoints" / "last.ckpt").read_bytes() == before  # the finished run is untouched

    code, err = eva("fit", "--config", str(tiny), "--weights_from", "last", "--trainer.max_epochs", "4", capsys=capsys)
    assert code == 0, err
    new = torch.load(Path("lightning_logs/tiny/version_1/checkpoints/last.ckpt"), weights_only=True)
    assert new["epoch"] == 3 and new["global_step"] == 16  # a whole new 4-epoch schedule
    assert new["lr_schedulers"][0]["total_steps"] == 16


def test_weights_from_loads_the_weights_and_refuses_a_mix_with_ckpt_path(tiny, monkeypatch, capsys):
    from eva_lightning.core.trainer import EvaTrainer

    assert eva("fit", "--config", str(tiny), capsys=capsys)[0] == 0
    ckpt = RUN / "checkpoints" / "last.ckpt"
    started = {}
    with monkeypatch.context() as patch:  # the weights the new run's fit starts from
        patch.setattr(EvaTrainer, "fit", lambda self, model, **kwargs: started.update(model.state_dict()))
        assert eva("fit", "--config", str(tiny), "--weights_from", str(ckpt), capsys=capsys)[0] == 0
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    assert started.keys() == saved.keys()
    for key, value in started.items():
        assert torch.equal(value, saved[key]), key
    code, err = eva("fit", "--config", str(tiny), "--weights_from", str(ckpt), "--ckpt_path", str(ckpt), capsys=capsys)
    assert code == 2 and "give one of them" in one_error(err)
    code, err = eva("test", "--config", str(tiny), "--weights_from", str(ckpt), capsys=capsys)
    assert code == 2 and "pass it as --ckpt_path" in one_error(err)


@pytest.mark.parametrize("schedule", ["none", "step"])
def test_a_per_epoch_schedule_simply_continues_for_more_epochs(tiny, schedule, capsys):
    tiny.write_text(tiny.read_text().replace(ONE_CYCLE, f"{{name: {schedule}, step_size: 1}}"))
    assert eva("fit", "--config", str(tiny), "--trainer.max_epochs", "1", capsys=capsys)[0] == 0
    code, err = eva("fit", "--config", str(tiny), "--ckpt_path", "last", "--trainer.max_epochs", "2", capsys=capsys)
    assert code == 0, err
    assert torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


# --------------------------------------------------------------------------- a full disk
def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_says_how_to_go_on(tiny, monkeypatch, capsys):
    from eva_lightning.core import checkpoints

    real_save, saves = checkpoints.torch.save, []

    def second_save_fails(obj, f, *args, **kwargs):
        saves.append(obj["epoch"])
        if len(saves) == 2:
            f.write(b"PK\x03\x04 half")
            _disk_full()
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", second_save_fails)
    code, err = eva("fit", "--config", str(tiny), capsys=capsys)
    line = one_error(err)
    assert code == 2 and line.startswith("error: the disk is full: could not write "), line
    assert "last.ckpt (needs about" in line and "free there" in line and "previous checkpoint is kept" in line, line
    assert "--ckpt_path last" in line
    ckpt = RUN / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0  # epoch 0's checkpoint survived the failed epoch-1 write
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]  # no temporary file left

    monkeypatch.setattr(checkpoints.torch, "save", real_save)  # space freed: the same command continues
    assert eva("fit", "--config", str(tiny), "--ckpt_path", "last", capsys=capsys)[0] == 0
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def test_a_full_disk_for_tensorboard_events_names_the_event_file(tiny, monkeypatch, capsys):
    from tensorboard.summary.writer import record_writer

    real_write, calls = record_writer.RecordWriter.write, []

    def fails_after_a_while(self, data):
        calls.append(1)
        if len(calls) > 12:
            _disk_full()
        real_write(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", fails_after_a_while)
    code, err = eva("fit", "--config", str(tiny), capsys=capsys)
    line = one_error(err)
    assert code == 2 and "the disk is full: could not write " in line and "events.out.tfevents." in line, line
    assert "Exception in thread" not in err  # the writer thread's stack is not printed


@pytest.mark.parametrize("what", ["figure", "report"])
def test_a_full_disk_for_a_figure_or_the_report_is_one_line(what, tiny, monkeypatch, capsys):
    if what == "report":  # only report.md's write fails
        real = Path.write_text

        def write_text(self, *args, **kwargs):
            if self.name == "report.md":
                _disk_full()
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)
        name, then = "report.md", "eva report"
    else:
        tiny.write_text(tiny.read_text().replace("  enable_progress_bar: false\n", "  enable_progress_bar: false\n"
                        "  callbacks: [{class_path: eva_lightning.callbacks.CurvesFigure}]\n"))
        monkeypatch.setattr("matplotlib.figure.Figure.savefig", _disk_full)
        name, then = "curves.png", "--ckpt_path last"
    code, err = eva("fit", "--config", str(tiny), capsys=capsys)
    line = one_error(err)
    assert code == 2 and f"could not write {RUN / name} (" in line and then in line, line
    assert (RUN / "checkpoints" / "last.ckpt").is_file()  # the trained run is kept


def test_a_full_disk_for_predictions_csv_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    from eva_lightning.callbacks import predictions
    from PIL import Image

    assert eva("fit", "--config", str(tiny), capsys=capsys)[0] == 0
    images = tmp_path / "mine"
    images.mkdir()
    Image.new("L", (28, 28), 128).save(images / "a.png")
    real_open = open

    def open_(path, mode="r", *args, **kwargs):
        if str(path).endswith("predictions.csv") and "w" in mode:
            _disk_full()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(predictions, "open", open_, raising=False)
    code, err = eva("predict", "--config", str(tiny), "--ckpt_path", str(RUN / "checkpoints" / "last.ckpt"),
                    "--data.predict_dir", str(images), capsys=capsys)
    line = one_error(err)
    assert code == 2 and "predictions.csv" in line and "eva predict command again" in line, line


# --------------------------------------------------------------------------- config files from other editors
@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig", "crlf"])
def test_config_files_from_other_editors_are_read(encoding, tiny, capsys, caplog):
    text = "# résumé: s5 à la française\n" + tiny.read_text()
    if encoding == "crlf":
        tiny.write_bytes(text.replace("\n", "\r\n").encode())
    else:
        tiny.write_bytes(text.encode(encoding))
    code, err = eva("fit", "--config", str(tiny), "--trainer.fast_dev_run", "true", capsys=capsys)
    assert code == 0 and "Traceback" not in err, err
    assert ("is not UTF-8" in caplog.text) == (encoding == "latin-1")  # a guessed encoding is said


def test_a_config_in_utf16_without_its_mark_is_one_line(tiny, capsys):
    tiny.write_bytes(tiny.read_text().encode("utf-16-le"))
    code, err = eva("fit", "--config", str(tiny), capsys=capsys)
    assert code == 2 and "save it as UTF-8" in one_error(err)


# --------------------------------------------------------------------------- a run folder that cannot be made
@pytest.mark.parametrize("root", ["a_file/runs", "n" * 300, "/proc/eva-runs"])
def test_a_run_folder_that_cannot_be_created_is_one_line_and_leaves_nothing(root, tiny, tmp_path, capsys):
    Path("a_file").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = eva("fit", "--config", str(tiny), "--trainer.default_root_dir", root, capsys=capsys)
    line = one_error(err)
    assert code == 2 and "cannot write the run's files in" in line and "--trainer.default_root_dir" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --------------------------------------------------------------------------- messages that misled
def test_a_corrupt_checkpoint_suggests_only_files_that_exist(tiny, tmp_path, capsys):
    bad = tmp_path / "elsewhere" / "x.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(500))
    code, err = eva("test", "--config", str(tiny), "--ckpt_path", str(bad), capsys=capsys)
    line = one_error(err)
    assert code == 2 and "x.ckpt is truncated or corrupt" in line and "best-" not in line, line
    (bad.parent / "best-epoch03-acc0.9900.ckpt").write_bytes(b"")
    line = one_error(eva("test", "--config", str(tiny), "--ckpt_path", str(bad), capsys=capsys)[1])
    assert "best-epoch03-acc0.9900.ckpt" in line, line


@pytest.mark.parametrize("args, needles", [
    (["--model.class_path", "tiny.TinyNett"], ["model.class_path 'tiny.TinyNett' does not exist",
                                               "did you mean 'tiny.TinyNet'?"]),
    (["--model.class_path", "eva_lightning.assignment.s5.S5Final"],
     ["no module 'eva_lightning.assignment.s5'", "did you mean 'eva_lightning.assignments.s5.S5Final'?"]),
    (["--model.init_args.optimizer.class_path", "torch.optim.SDG"],
     ["model.init_args.optimizer.class_path 'torch.optim.SDG' does not exist", "did you mean 'torch.optim.SGD'?"]),
    (["--trainer.callbacks+", "lightning.pytorch.callbacks.EarlyStoping"],
     ["did you mean 'lightning.pytorch.callbacks.EarlyStopping'?"]),
])
def test_a_class_path_that_does_not_exist_is_said_plainly_with_the_nearest_class(args, needles, tiny, capsys):
    code, err = eva("fit", "--config", str(tiny), *args, capsys=capsys)
    line = one_error(err)
    assert code == 2 and "Problem with given class_path" not in line, line
    for needle in needles:
        assert needle in line, line


# --------------------------------------------------------------------------- preemption (SIGTERM)
def _scalars(run: Path, tag: str) -> dict[int, float]:
    return logged(run, tag)  # the cut run's orphaned steps: the resumed run's win


@pytest.mark.parametrize("loader", ["torch", "batched"])
def test_sigterm_saves_where_the_run_was_exits_143_and_resumes_to_the_uncut_result(loader, tiny, tmp_path,
                                                                                 monkeypatch, capsys):
    text = tiny.read_text().replace("max_epochs: 2", "max_epochs: 3").replace("seed_everything: 1", "seed_everything: 7")
    text = text.replace("  enable_progress_bar: false\n", "  enable_progress_bar: false\n  deterministic: true\n"
                        "  callbacks: [{class_path: tiny.SigtermAt, init_args: {epoch: 1, batch: 1}}]\n")
    text += f"  loader: {loader}\n"
    tiny.write_text(text)
    uncut, cut = tmp_path / "uncut", tmp_path / "cut"
    uncut.mkdir()
    cut.mkdir()
    monkeypatch.chdir(uncut)
    assert eva("fit", "--config", str(tiny), capsys=capsys)[0] == 0

    monkeypatch.chdir(cut)
    monkeypatch.setenv(SIGTERM_ENV, "1")
    handler = signal.getsignal(signal.SIGTERM)
    code, err = eva("fit", "--config", str(tiny), capsys=capsys)
    assert signal.getsignal(signal.SIGTERM) == handler  # put back
    line = one_error(err)
    assert code == 143, err
    assert line.startswith("stopped: SIGTERM at epoch 1, batch 2 of 4 (step 6): saved that point in ") and \
        "--ckpt_path last" in line, line
    assert torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6  # not epoch 0's end
    monkeypatch.delenv(SIGTERM_ENV)
    code, err = eva("fit", "--config", str(tiny), "--ckpt_path", "last", capsys=capsys)
    assert code == 0, err

    a = torch.load(uncut / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(cut / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"] == 12
    for key, value in a["state_dict"].items():  # bitwise on CPU
        assert torch.equal(value, b["state_dict"][key]), key
    for tag in ("val/acc", "val/loss", "lr", "train/loss", "train/acc"):  # train/* of the cut epoch whole too
        assert _scalars(uncut / RUN, tag) == _scalars(cut / RUN, tag), tag
    steps = _scalars(uncut / RUN, "train/loss_step")
    del steps[5]  # the one point lost: the stopped step's loss, logged by Lightning after the batch's last hook
    assert _scalars(cut / RUN, "train/loss_step") == steps


def test_sigterm_before_training_is_one_line_and_not_exit_0(tiny, monkeypatch, capsys):
    from lightning.pytorch.callbacks import Callback

    def sanity_check_start(self, trainer, pl_module):  # Lightning's own handler is on during the sanity check
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Callback, "on_sanity_check_start", sanity_check_start)
    code, err = eva("fit", "--config", str(tiny), capsys=capsys)
    line = one_error(err)
    assert code == 143 and line.startswith("stopped: SIGTERM at epoch 0") and "--ckpt_path last" in line, line
