"""`eva` end to end as a user runs it: one subprocess for `fit`/`test` and one for `--help`/`--version`,
the rest in-process (`EvaCLI(args=...)`, `main(argv)`)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_eva, logged
from eva_lightning.cli import EvaCLI, ParsedOnly
from eva_lightning.entry import main


def test_fit_writes_checkpoints_and_tensorboard_scalars(tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    EvaCLI(args=["fit", "--config", str(tiny_config), "--trainer.max_epochs", "1"])
    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    # validation is the test split: last.ckpt is the model of record, no "best" is chosen on it (#12)
    assert "last.ckpt" in ckpts and not any(n.startswith("best") for n in ckpts), ckpts
    assert (run / "config.yaml").exists()
    scalars = logged(run)
    assert {"train/loss", "val/acc", "val/loss", "train/acc", "lr"} <= set(scalars), set(scalars)
    assert abs(list(scalars["lr"].values())[0] - 0.05) < 1e-7  # the optimiser's LR from the config
    assert 0.0 <= list(scalars["val/acc"].values())[-1] <= 1.0
    # testing that checkpoint without a logger leaves nothing in the working directory
    before = sorted(p.name for p in tmp_path.iterdir())
    EvaCLI(args=["test", "--config", str(tiny_config), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                 "--trainer.logger", "false"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def exits_ok(argv: list[str], capsys) -> str:
    """``eva ARGV`` in-process: it exits 0 (or returns); what it printed."""
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err[-2000:]
    return capsys.readouterr().out


def test_help_and_print_config_round_trip(tmp_path, tiny_config, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    top = exits_ok(["--help"], capsys)
    assert "fit" in top and "predict" in top
    assert "--data.batch_size" in exits_ok(["fit", "--help"], capsys)
    printed = exits_ok(["fit", "--config", str(tiny_config), "--print_config"], capsys)
    assert "class_path: tiny.TinyNet" in printed and "batch_size: 32" in printed
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(printed)
    assert exits_ok(["fit", "--config", str(resolved), "--print_config"], capsys) == printed


def test_parsed_only_reads_a_config_without_seeding(tiny_config, monkeypatch):
    """eva tune and the tests read configs with ParsedOnly: the caller's generators and PL_GLOBAL_SEED stay as they
    were (LightningCLI would seed them with the config's seed_everything)."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    torch.manual_seed(12345)
    random.seed(12345)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(12345)
    random.seed(12345)
    cfg = ParsedOnly(["--config", str(tiny_config), "--seed_everything", "7"]).config
    assert cfg["seed_everything"] == 7
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert "PL_GLOBAL_SEED" not in os.environ


def test_module_runs_from_a_plain_checkout_without_install(monkeypatch, capsys):
    """PYTHONPATH=. python -m eva_lightning works (what the GPU machine does): its __main__, in-process."""
    import runpy

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["eva_lightning", "fit", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("eva_lightning", run_name="__main__")
    assert exc.value.code in (0, None) and "--data.dataset" in capsys.readouterr().out


def test_progress_bar_redraws_every_few_steps_and_yields_to_the_users_choice(tiny_config, tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

    from eva_lightning.cli import PROGRESS_REFRESH, EvaCLI

    monkeypatch.chdir(tmp_path)

    def bars(*overrides: str) -> list:
        cli = EvaCLI(args=["--config", str(tiny_config), *overrides], run=False)
        return [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]

    (bar,) = bars("--trainer.enable_progress_bar", "true")  # the tiny config turns it off
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == PROGRESS_REFRESH > 1
    assert bars() == []  # no clash with a disabled bar
    (own,) = bars("--trainer.enable_progress_bar", "true", "--trainer.callbacks+=TQDMProgressBar",
                  "--trainer.callbacks.refresh_rate=3")
    assert own.refresh_rate == 3


# --------------------------------------------------------------------------- a newcomer's first hour (#17)
def test_help_lists_every_subcommand_with_a_description(capsys):
    from eva_lightning.cli import EvaCLI
    from eva_lightning.entry import TOOLS, main

    for argv in (["--help"], ["-h"], []):
        main(argv)
        out = capsys.readouterr().out
        for name in [*EvaCLI.subcommands(), *TOOLS]:
            line = next((ln for ln in out.splitlines() if ln.split()[:1] == [name]), None)
            assert line is not None and len(line.split()) > 3, f"{name} has no one-line description in:\n{out}"


def test_help_lists_lightning_clis_own_subcommands():
    from eva_lightning.cli import EvaCLI
    from eva_lightning.entry import SUBCOMMANDS

    assert list(SUBCOMMANDS) == list(EvaCLI.subcommands())


def test_help_and_version_answer_without_importing_torch_or_lightning():
    # the first thing a newcomer types: the torch + lightning import alone takes seconds
    import subprocess
    import sys

    probe = ("import sys; from eva_lightning.entry import main; main(['--help']); main(['--version']); "
             "print(sorted(m for m in ('torch', 'lightning', 'jsonargparse') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "usage: eva SUBCOMMAND" in res.stdout and "eva-lightning " in res.stdout
    assert res.stdout.splitlines()[-1] == "[]", res.stdout


@pytest.mark.parametrize("tool", ["lr_find", "summary", "compare", "report"])
def test_each_tool_has_help(tool, capsys):
    from eva_lightning.entry import TOOLS, main

    assert tool in TOOLS
    try:
        main([tool, "--help"])
    except SystemExit as exc:  # argparse-style help exits 0
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "usage" in out.lower() and "--" in out  # its options


def test_every_registered_tool_has_help(capsys):
    from eva_lightning.entry import TOOLS, main

    for tool in TOOLS:
        try:
            main([tool, "--help"])
        except SystemExit as exc:
            assert exc.code in (0, None), tool
        assert "usage" in capsys.readouterr().out.lower(), tool


def test_version_names_project_torch_and_lightning(capsys):
    import lightning
    import torch

    import eva_lightning
    from eva_lightning.entry import main

    main(["--version"])
    out = capsys.readouterr().out
    assert f"eva-lightning {eva_lightning.__version__}" in out and eva_lightning.__version__[0].isdigit()
    # the distribution's version (a local build tag such as +cu130 may be the module's only)
    assert f"torch {torch.__version__.split('+')[0]}" in out and f"lightning {lightning.__version__}" in out


#: known-harmless third-party notices a shipped-config run must not print (issue #17)
NOISE = ("💡 Tip", "litlogger", "litmodels", "LeafSpec", "_pytree", "Loading `train_dataloader` to estimate")
#: the layer table must list layers, not the metric objects, and no FLOPs that were never counted
TABLE_NOISE = ("MulticlassAccuracy", "Total Flops", "FLOPs", "Modules in train mode")


def test_layer_table_lists_the_network_not_the_metrics(tmp_path, tiny_config, monkeypatch, lightning_log, capsys):
    monkeypatch.chdir(tmp_path)
    EvaCLI(args=["fit", "--config", str(tiny_config)])
    console = lightning_log.text + "".join(capsys.readouterr())
    table = console[console.index("| Name"):console.index("Total params")]
    assert re.search(r"\| net +\| Sequential", table), table
    assert [n for n in TABLE_NOISE if n in console] == [], table


def summary_block(stdout: str) -> dict[str, str]:
    """The end-of-run summary: the lines after the last ``fit finished:`` / ``test finished:``."""
    lines = stdout.rstrip().splitlines()
    start = max(i for i, ln in enumerate(lines) if re.fullmatch(r"(fit|test) (finished|stopped):", ln))
    return dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in lines[start + 1:])


def test_shipped_config_fit_and_test_end_with_a_summary_and_a_clean_console(tmp_path, mnist_dir):
    """`make run`'s config for 3 epochs, then `eva test` of the committed checkpoint, on tiny data."""
    fit = run_eva("fit", "--config", str(ROOT / "configs" / "s5.yaml"), "--data.data_dir", str(mnist_dir),
                  "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "1",
                  "--trainer.callbacks+=tiny.WarnsOnce", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    console = fit.stdout + fit.stderr
    assert [n for n in NOISE if n in console] == [], console[-4000:]
    assert "UserWarning: this is a real problem" in console  # other warnings still print
    summary = summary_block(fit.stdout)
    assert list(summary)[0] == "test accuracy"
    assert re.fullmatch(r"\d+\.\d\d% \(final epoch; validation ran on the test split\)", summary["test accuracy"])
    run = Path("lightning_logs") / "s5" / "version_0"
    assert summary["run folder"] == str(run) and (tmp_path / run).is_dir()
    assert summary["TensorBoard"] == f"tensorboard --logdir {run}"
    assert summary["report"] == str(run / "report.md") and (tmp_path / run / "report.md").is_file()
    assert summary["epochs"].startswith("3 of 3 in ")
    assert "best" not in fit.stdout.split("fit finished:")[-1].lower()
    # the summary is what the user sees last
    assert fit.stdout.rstrip().splitlines()[-1].strip().startswith(("checkpoint", "report"))

    test = run_eva("test", "--config", str(ROOT / "configs" / "s4.yaml"), "--data.data_dir", str(mnist_dir),
                   "--ckpt_path", str(ROOT / "checkpoints" / "s4.ckpt"), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    console = test.stdout + test.stderr
    assert [n for n in NOISE if n in console] == [], console[-4000:]
    summary = summary_block(test.stdout)
    assert re.fullmatch(r"\d+\.\d\d% \(test split\)", summary["test accuracy"]), summary
    assert summary["run folder"] == str(Path("lightning_logs") / "s4" / "version_0")
    assert "epochs" not in summary


def test_fit_with_a_held_out_split_reports_the_final_test_and_the_best_validation(tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = EvaCLI(args=["fit", "--config", str(tiny_config), "--trainer.max_epochs", "2", "--data.val_split", "0.25"])
    summary = summary_block(cli.closing_lines())
    assert list(summary)[:2] == ["test accuracy", "test loss"]
    assert re.fullmatch(r"\d+\.\d\d% \(final weights, test split\)", summary["test accuracy"])
    assert re.fullmatch(r"\d+\.\d\d% final; best \d+\.\d\d% at epoch [01] \(held-out 0.25 of the training set\)|"
                        r"\d+\.\d\d% final \(held-out 0.25 of the training set\)", summary["validation accuracy"])
    report = (tmp_path / summary["report"]).read_text()
    head = report.split("## Run")[0]  # the same summary opens report.md
    assert "| test accuracy | " + summary["test accuracy"] + " |" in head
    assert "| validation accuracy | " + summary["validation accuracy"] + " |" in head
    assert "| metric | final | best (held-out validation) |" in report
    assert re.search(r"\| `test/acc` \| [0-9.]+ \|  \|", report)  # no best for the test split


FAULTS_OF_A_TRAINING_STEP = """
import resource
from eva_lightning.entry import keep_freed_memory
print(keep_freed_memory())
import torch
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.GELU(),
                          torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(64 * 32 * 32, 10))
x = torch.randn(64, 3, 32, 32)
for _ in range(2):
    net(x).sum().backward()
faults = []
for _ in range(5):  # each step allocates and frees what the first two did
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[2])  # the median step: one step may fault a stray page run in (a kernel reclaim, a huge page)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_eva_reuses_the_memory_a_step_frees():
    """eva keeps the memory a step frees (keep_freed_memory, called by main): a training step after the first two
    faults few pages in, where with glibc's defaults (EVA_MALLOC=system) it faults its activations in again (the
    median of five steps: ≈ 40,000 pages against 0 on the EPYC; a single step of the kept run once faulted 8,192)."""
    def step_faults(malloc: str) -> tuple[bool, int]:
        env = {**os.environ, "EVA_MALLOC": malloc, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", FAULTS_OF_A_TRAINING_STEP], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0] == "True", int(out[1])

    (kept, faults), (default, system_faults) = step_faults(""), step_faults("system")
    assert kept and not default
    assert faults * 4 < system_faults, (faults, system_faults)
