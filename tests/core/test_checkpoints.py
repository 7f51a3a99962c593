"""A checkpoint is data: a pickle payload or a foreign class path in it never runs on the user's machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_CONFIG, eva_env, finish_main_cases, start_main_cases, write_mnist
from eva_lightning.cli import EvaCLI

EVIL_MODULE = """\
from pathlib import Path
Path({marker!r}).touch()  # importing this module is the attack
from tiny import TinyNet
"""


class Payload:
    """Unpickling this runs ``touch marker`` (what a malicious checkpoint would do with worse commands)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _main_cases(cases: dict[str, list[str]], cwd: Path, env: dict, tag: str) -> dict:
    return finish_main_cases(*start_main_cases(cases, cwd, tag, env))


@pytest.fixture(scope="module")
def attack(tmp_path_factory):
    base = tmp_path_factory.mktemp("security")
    data = write_mnist(base / "data", n_train=96, n_test=32)
    config = base / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(data_dir=data))
    ema = base / "ema.yaml"  # a callback with state of its own in the checkpoint
    ema.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging\n"
                   "      init_args: {decay: 0.9}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        EvaCLI(args=["fit", "--config", str(config), "--config", str(ema), "--trainer.max_epochs", "2",
                     "--data.val_split", "0.25"])
    run = base / "lightning_logs" / "ema" / "version_0"
    good = run / "checkpoints" / "last.ckpt"

    marker, import_marker = base / "payload_ran", base / "module_imported"
    evil = torch.load(good, weights_only=True)
    evil["extra"] = Payload(marker)
    torch.save(evil, base / "evil.ckpt")
    foreign = torch.load(good, weights_only=True)
    foreign["hyper_parameters"]["_class_path"] = "evilmod.TinyNet"
    torch.save(foreign, base / "foreign_class.ckpt")
    (base / "mods").mkdir()
    (base / "mods" / "evilmod.py").write_text(EVIL_MODULE.format(marker=str(import_marker)))
    env = eva_env({"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}{os.pathsep}{base / 'mods'}"})

    work = base / "work"  # cwd of the refused runs: must stay empty
    work.mkdir()
    common = ["--config", str(config), "--data.predict_dir", str(base / "nowhere")]
    evil_args = ["--ckpt_path", str(base / "evil.ckpt")]
    refused = _main_cases({
        "test": ["test", *common[:2], *evil_args],
        "validate": ["validate", *common[:2], *evil_args],
        "predict": ["predict", *common, *evil_args],
        "fit": ["fit", *common[:2], *evil_args],
        "foreign_class": ["test", *common[:2], "--ckpt_path", str(base / "foreign_class.ckpt")],
    }, work, env, "refused")
    state = {"refused": refused, "payload_ran": marker.exists(), "module_imported": import_marker.exists(),
             "work": sorted(p.name for p in work.iterdir())}
    trusted = _main_cases({"test": ["test", *common[:2], *evil_args, "--trust_checkpoint", "true",
                                    "--trainer.logger", "false"]}, work, env, "trusted")
    state.update(trusted=trusted["test"], payload_ran_trusted=marker.exists(), run=run)
    return state


@pytest.mark.parametrize("case", ["test", "validate", "predict", "fit"])
def test_pickle_payload_is_refused_with_one_line(attack, case):
    result = attack["refused"][case]
    assert result["traceback"] is None, result["traceback"]
    err = result["stderr"]
    assert result["code"] == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "evil.ckpt was refused" in lines[0] and "system" in lines[0] and "--trust_checkpoint true" in lines[0]


def test_payload_never_ran_and_nothing_was_written(attack):
    assert not attack["payload_ran"]
    assert attack["work"] == []  # no run directory, no config.yaml


def test_class_path_in_a_checkpoint_is_not_imported(attack):
    result = attack["refused"]["foreign_class"]
    assert result["code"] == 2 and result["traceback"] is None, result
    assert "saved from evilmod.TinyNet, which does not match the configured model tiny.TinyNet" in result["stderr"]
    assert not attack["module_imported"]


def test_nested_class_paths_are_checked_as_strings():
    from eva_lightning.core.checkpoints import check_class_paths
    from eva_lightning.core.errors import EvaError

    hparams = {"_class_path": "eva_lightning.assignments.s4.S4Model", "norm": {"class_path": "evilmod.Norm"}}
    with pytest.raises(EvaError, match="names the class 'evilmod.Norm'.*will not import it"):
        check_class_paths("x.ckpt", hparams, allowed={"torch.optim.SGD"})
    check_class_paths("x.ckpt", hparams, allowed={"evilmod.Norm"})  # named by the user's own config
    check_class_paths("x.ckpt", hparams, allowed=set(), trusted=True)


def test_trusted_checkpoint_loads_the_old_way(attack):
    result = attack["trusted"]
    assert result["code"] == 0 and result["traceback"] is None, result["stderr"][-3000:]
    assert attack["payload_ran_trusted"]  # the opt-in really unpickles in full


def test_every_checkpoint_we_write_or_ship_loads_as_data(attack):
    written = sorted(attack["run"].glob("checkpoints/*.ckpt"))
    shipped = sorted((ROOT / "checkpoints").glob("*.ckpt"))
    assert any(p.name == "last.ckpt" for p in written) and shipped
    for path in written + shipped:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
        assert ckpt["state_dict"], path
    last = torch.load(attack["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert {"RngState", "EMAWeightAveraging"} <= {key.split("{")[0] for key in last["callbacks"]}
