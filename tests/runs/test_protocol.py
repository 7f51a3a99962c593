"""runs/protocol.py: the one evaluation protocol the CLI and the run readers ask."""

import pytest

from eva_lightning.runs.protocol import Protocol
from eva_lightning.runs.report import Headline


def test_validation_on_the_test_split_chooses_nothing_and_reports_val_acc():
    p = Protocol(0.0)
    assert not p.held_out
    assert not p.tests_after_fit and not p.keeps_best_checkpoint and not p.may_choose_best("val/acc")
    assert p.tag_of_record({"val/acc", "train/loss"}) == "val/acc"
    assert p.tag_of_record({"val/acc", "test/acc"}) == "test/acc"  # eva test of a checkpoint: the test it ran


def test_a_held_out_split_may_choose_on_val_only_and_reports_the_final_test():
    p = Protocol(5000)
    assert p.held_out and p.tests_after_fit and p.keeps_best_checkpoint
    assert p.may_choose_best("val/acc") and p.may_choose_best("val/loss") and not p.may_choose_best("test/acc")
    assert p.tag_of_record({"val/acc"}) == "test/acc"  # its val/acc is no test accuracy, even before the test


def test_no_test_at_the_end_of_a_tuning_fit():
    p = Protocol(0.1, test_after_fit=False)
    assert p.held_out and not p.tests_after_fit and p.keeps_best_checkpoint
    assert not Protocol(0.0, test_after_fit=False).tests_after_fit
    rows = dict(Headline("fit", {"val/acc": 0.9}, Protocol(0.1, test_after_fit=False)).rows())
    assert rows["test accuracy"] == "not measured (--test_after_fit false: the test split was not read)"
    assert dict(Headline("fit", {"val/acc": 0.9}, Protocol(0.1)).rows())["test accuracy"] == "not measured (no test/acc logged)"


def test_test_time_augmentation_makes_a_fit_on_the_test_split_end_by_testing():
    """Validation epochs are one view; with tta the test differs, so it runs after fit and is the record."""
    p = Protocol(0.0, tta="flip_translate")
    assert not p.held_out and p.tests_after_fit and not p.keeps_best_checkpoint and not p.may_choose_best("val/acc")
    assert p.tag_of_record({"val/acc", "test/acc"}) == "test/acc"
    assert not Protocol(0.0, test_after_fit=False, tta="flip").tests_after_fit  # a tuning fit still never tests


@pytest.mark.parametrize("config, expected", [
    ({}, Protocol(0.0, True)),
    ({"data": {"val_split": 0.1}}, Protocol(0.1, True)),
    ({"data": {"val_split": 5000}, "test_after_fit": False}, Protocol(5000.0, False)),
    ({"data": {"val_split": "nonsense"}}, Protocol(0.0, True)),
    ({"data": ["not", "a", "mapping"]}, Protocol(0.0, True)),
    ("not a mapping", Protocol(0.0, True)),
    ({"model": {"init_args": {"tta": "flip"}}}, Protocol(0.0, True, "flip")),
    ({"model": {"init_args": {"tta": None}}}, Protocol(0.0, True)),
])
def test_read_from_a_config(config, expected):
    assert Protocol.of_config(config) == expected


def test_read_from_a_data_module():
    class DM:
        val_split = 0.25

    assert Protocol.of_datamodule(DM(), test_after_fit=False) == Protocol(0.25, False)
    assert Protocol.of_datamodule(object()) == Protocol(0.0, True)


def test_fit_on_the_test_split_with_tta_ends_by_testing_with_it(tmp_path, monkeypatch):
    """configs/cifar10_fast.yaml (6-view TTA) validating on the test split: fit ends with a test whose accuracy is
    the TTA one (not the one-view val/acc of the last epoch), and the run's headline reports it."""
    from conftest import ROOT, write_cifar_jpeg
    from eva_lightning.cli import EvaCLI
    from eva_lightning.runs.report import Headline

    from eva_lightning.runs import record

    written = []
    monkeypatch.setattr(record, "write_report", lambda run, _write=record.write_report: written.append(run) or _write(run))
    monkeypatch.chdir(tmp_path)
    cli = EvaCLI(args=["fit", "--config", str(ROOT / "configs" / "cifar10_fast.yaml"),
                       "--data.data_dir", str(write_cifar_jpeg(tmp_path)), "--data.val_split", "0",
                       "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.max_epochs", "2",
                       "--trainer.limit_train_batches", "5", "--trainer.enable_progress_bar", "false",
                       "--data.batch_size", "16", "--model.init_args.widths", "[8, 16, 16]",
                       "--model.init_args.schedule.peak_epoch", "0.5"])
    assert cli.protocol.tests_after_fit and cli.model.tta == "flip_translate"
    metrics = cli.trainer.callback_metrics  # the test's, after fit's
    run = next((tmp_path / "lightning_logs" / "cifar10_fast").glob("version_*"))
    headline = Headline.from_run(run)
    assert {"val/acc", "test/acc"} <= set(headline.final) and headline.final["test/acc"] == float(metrics["test/acc"])
    assert dict(headline.rows())["test accuracy"].startswith(f"{100 * float(metrics['test/acc']):.2f}%")
    assert len(written) == 1 and "test/acc" in (run / "report.md").read_text()  # report.md once, after the test
