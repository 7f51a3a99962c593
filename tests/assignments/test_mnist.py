"""S4/S5/S6 networks: the assignments' constraints, the course's steps, the README's parameter counts, the committed checkpoints."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from eva_lightning.assignments.s5 import S5Net, SkeletonNet
from conftest import ROOT, as_param, expand, files_read, read_config

MNIST_CONFIGS = sorted(p for p in (ROOT / "configs").glob("s[456]*.yaml") if not p.stem.endswith("_base"))


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize(
    "net, max_params, max_pools",
    [
        (S5Net(), 8_000, 2),  # S5 step 3-4
        (S5Net(norm="gbn"), 8_000, 2),  # S6 Ghost BN: same parameters
    ],
    ids=["s5", "s5-gbn"],
)
def test_constraints_no_linear_few_params_few_pools(net, max_params, max_pools):
    assert n_params(net) < max_params
    assert count(net, nn.Linear) == 0
    assert 1 <= count(net, nn.MaxPool2d) <= max_pools
    assert count(net, nn.AdaptiveAvgPool2d) == 1  # GAP + 1x1 conv instead of a dense layer
    net.eval()
    out = net(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_skeleton_steps(batch_norm):
    net = SkeletonNet(batch_norm=batch_norm)
    assert count(net, nn.Linear) == 0 and count(net, nn.AdaptiveAvgPool2d) == 1
    assert count(net, nn.BatchNorm2d) == (5 if batch_norm else 0)
    assert n_params(net) < 20_000
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_step2_adds_only_batch_norm():
    """The course's step 2 is step 1 + BN: the convolutions are the same, only BN parameters are added."""
    plain, bn = SkeletonNet(batch_norm=False), SkeletonNet(batch_norm=True)
    convs = lambda net: [tuple(m.weight.shape) + (m.bias is not None,) for m in net.modules() if isinstance(m, nn.Conv2d)]  # noqa: E731
    assert convs(plain) == convs(bn)
    bn_params = sum(n_params(m) for m in bn.modules() if isinstance(m, nn.BatchNorm2d))
    assert n_params(bn) - n_params(plain) == bn_params > 0


def resolved(config: str) -> dict:
    return read_config(ROOT / "configs" / config)


#: the course's S5 steps: parameters and test accuracy of its solution
COURSE_STEPS = {"s5_step1": (19_734, 0.9875), "s5_step2": (19_942, 0.9912), "s5_step3": (7_216, 0.9932), "s5_step4": (7_216, 0.9942)}


@pytest.mark.parametrize("config", sorted(COURSE_STEPS))
def test_s5_steps_match_the_course_parameter_counts(config):
    course, target = COURSE_STEPS[config]
    net = build_net(ROOT / "configs" / f"{config}.yaml")
    assert abs(n_params(net) - course) <= 0.05 * course, f"{config}: {n_params(net):,} vs the course's {course:,}"
    assert count(net, nn.Linear) == 0 and count(net, nn.AdaptiveAvgPool2d) == 1
    assert f"{target:.2%}" in (ROOT / "configs" / f"{config}.yaml").read_text().splitlines()[0]  # header names the target


def test_s5_steps_share_one_optimiser_and_schedule_and_change_one_thing_each():
    steps = {name: resolved(f"{name}.yaml") for name in sorted(COURSE_STEPS)}
    for name in steps:  # the step files hold only the model (and step 4 its rotation): the rest is s5_base.yaml
        own = expand(yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()))
        assert set(own) <= {"model", "data"} and set(own["model"]["init_args"]).isdisjoint({"optimizer", "schedule", "lr"})
        assert [p.name for p in files_read(ROOT / "configs" / f"{name}.yaml")] == ["s5_base.yaml", f"{name}.yaml"]

    def without(cfg: dict, *keys: str) -> dict:
        cfg = yaml.safe_load(yaml.safe_dump(cfg))
        for key in keys:
            *path, last = key.split(".")
            node = cfg
            for part in path:
                node = node[part]
            node.pop(last)
        return cfg

    step1, step2, step3, step4 = steps.values()
    optim = step1["model"]["init_args"]["optimizer"]
    assert optim == {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9}}
    assert all(s["model"]["init_args"]["schedule"] == {"name": "none"} for s in steps.values())
    figures = {"eva_lightning.callbacks.CurvesFigure", "eva_lightning.callbacks.MisclassifiedGrid"}
    assert all({c["class_path"] for c in s["trainer"].get("callbacks", [])} <= figures for s in steps.values())  # no EMA or other tricks
    assert step1["model"]["init_args"]["batch_norm"] is False and step2["model"]["init_args"]["batch_norm"] is True
    assert without(step1, "model.init_args.batch_norm") == without(step2, "model.init_args.batch_norm")
    assert step3["model"]["init_args"]["dropout"] > 0
    rotate = step4["data"]["train_transforms"]
    assert [t["name"] for t in rotate] == ["Rotate", "Normalize"] and step3["data"]["train_transforms"] == rotate[1:]
    assert without(step3, "data.train_transforms") == without(step4, "data.train_transforms")


def test_main_job_is_s5_step5():
    """`make run` trains configs/s5.yaml, the course's final target: <= 10 epochs, < 10k, BN, GAP, augmentation."""
    assert "configs/s5.yaml" in (ROOT / "Makefile").read_text()
    cfg = yaml.safe_load((ROOT / "configs" / "s5.yaml").read_text())
    assert cfg["trainer"]["max_epochs"] <= 10
    assert "> 99.5%" in (ROOT / "configs" / "s5.yaml").read_text().splitlines()[0]
    assert {t["name"] for t in cfg["data"]["train_transforms"]} - {"Normalize", "ToTensorV2"}  # augmented
    # no duplicate config files (the old s5.yaml was a copy of s5_step4.yaml)
    configs = [yaml.safe_load(p.read_text()) for p in (ROOT / "configs").glob("*.yaml")]
    assert all(a != b for i, a in enumerate(configs) for b in configs[i + 1 :])


@pytest.mark.parametrize("config, max_params", [("s5", 10_000), ("s5_small", 8_000)])
def test_step5_constraints(config, max_params):
    net = build_net(ROOT / "configs" / f"{config}.yaml")
    assert n_params(net) < max_params
    assert count(net, nn.Linear) == 0
    assert count(net, nn.BatchNorm2d) >= 5
    assert count(net, nn.AdaptiveAvgPool2d) == 1  # GAP + 1x1 conv instead of a dense layer
    net.eval()
    out = net(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


def test_s5_small_differs_from_s5_only_in_widths_and_the_shift():
    """Chosen on held-out validation (#28): s5_small drops s5's pad-and-crop shift, nothing else."""
    main, small = (yaml.safe_load((ROOT / "configs" / f"{n}.yaml").read_text()) for n in ("s5", "s5_small"))
    assert [t["name"] for t in main["data"]["train_transforms"]] == ["Rotate", "PadIfNeeded", "RandomCrop", "Normalize"]
    main["data"]["train_transforms"] = [t for t in main["data"]["train_transforms"] if t["name"] not in ("PadIfNeeded", "RandomCrop")]
    for cfg in (main, small):
        cfg["model"]["init_args"].pop("widths")
    assert main == small


def test_s4_literal_is_over_the_limit():
    """The course's literal "6 convolution layers with kernels 10, 10, 20, 20, 30, 30": 19,890 3x3 conv weights."""
    from eva_lightning.analysis.summary import summarize

    net = build_net(ROOT / "configs" / "s4_literal.yaml").eval()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [m.out_channels for m in convs] == [10, 10, 20, 20, 30, 30]
    assert sum(m.weight.numel() for m in convs) == 19_890
    assert summarize(net, (1, 28, 28)).params > 10_000
    assert count(net, nn.Linear) == 0 and count(net, nn.MaxPool2d) == 2


#: what an S6 run may set on top of configs/s6_base.yaml: its regulariser and its norm
S6_DELTA_KEYS = {"model.init_args.l1", "model.init_args.optimizer.init_args.weight_decay", "model.init_args.norm",
                 "model.init_args.virtual_batch_size"}


def flat_keys(cfg: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in cfg.items():
        out |= flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return out


def test_s6_runs_are_step5_plus_their_regulariser():
    """Each S6 file holds only its regulariser/norm; together with s6_base.yaml it is step 5 over 25 epochs."""
    names = sorted(p.stem for p in (ROOT / "configs").glob("s6_*.yaml") if p.stem != "s6_base")
    assert names == ["s6_gbn", "s6_l1_bn", "s6_l1_l2_bn", "s6_l1_l2_gbn", "s6_l2_bn"]
    step5 = resolved("s5.yaml")
    for name in names:
        assert [p.name for p in files_read(ROOT / "configs" / f"{name}.yaml")] == ["s6_base.yaml", f"{name}.yaml"]
        own = expand(yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()))
        assert flat_keys(own) <= S6_DELTA_KEYS, f"{name} sets more than its regulariser"
        cfg = resolved(f"{name}.yaml")
        args = cfg["model"]["init_args"]
        assert cfg["trainer"]["max_epochs"] == 25
        assert (args["l1"] > 0) == ("l1" in name)
        assert (args["optimizer"]["init_args"]["weight_decay"] > 0) == ("l2" in name)
        assert args.get("norm", "bn") == ("gbn" if name.endswith("gbn") else "bn")
    # the base: step 5's network, data and recipe; only the epochs (and the one-cycle peak with them),
    # the weight decay (left to the runs) and the misclassified grid differ
    base = yaml.safe_load((ROOT / "configs" / "s6_base.yaml").read_text())
    assert base["model"]["class_path"] == step5["model"]["class_path"] == "eva_lightning.assignments.s5.S5Final"
    assert base["data"] == step5["data"] and base["seed_everything"] == step5["seed_everything"]
    assert base["trainer"]["callbacks"][0] == step5["trainer"]["callbacks"][0]  # WarmupEMA
    assert [c["class_path"] for c in base["trainer"]["callbacks"]] == [c["class_path"] for c in step5["trainer"]["callbacks"]]
    b, s = yaml.safe_load(yaml.safe_dump(base["model"]["init_args"])), yaml.safe_load(yaml.safe_dump(step5["model"]["init_args"]))
    assert b["optimizer"]["init_args"].pop("weight_decay") == 0 and b.pop("l1") == 0
    s["optimizer"]["init_args"].pop("weight_decay")
    # S6's recorded runs kept step 5's former dropout 0.02; step 5 dropped it on held-out validation (#28)
    assert b.pop("dropout") == 0.02 and s.pop("dropout") == 0.0
    assert b["schedule"].pop("peak_epoch") / base["trainer"]["max_epochs"] == s["schedule"].pop("peak_epoch") / step5["trainer"]["max_epochs"]
    assert b == s


def build_net(config: Path) -> nn.Module:
    """The configured network as its header's command composes it, built without the CLI (only the model's own arguments)."""
    model = resolved(config.name)["model"]
    module, _, name = model["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    own = {k: v for k, v in model.get("init_args", {}).items() if k not in ("optimizer", "schedule")}
    return cls(in_channels=1, num_classes=10, **own).net


def readme_params() -> dict[str, int]:
    """``{config stem: parameters}`` from the tables of docs/mnist.md."""
    rows = re.findall(r"\|\s*`?configs/(\w+)\.yaml`?\s*\|\s*([\d,]+)\s*\|", (ROOT / "docs/mnist.md").read_text())
    return {stem: int(n.replace(",", "")) for stem, n in rows}


@pytest.mark.parametrize("config", [as_param(c) for c in MNIST_CONFIGS])  # S6 Ghost BN: xfail until S5Final takes norm
def test_readme_table_parameter_counts(config):
    """The README's count is what ``eva summary`` prints (and what the net really holds)."""
    from eva_lightning.analysis.summary import summarize

    table = readme_params()
    assert config.stem in table, f"{config.name} missing from the docs/mnist.md table"
    net = build_net(config).eval()
    assert summarize(net, (1, 28, 28)).params == n_params(net) == table[config.stem]


#: accuracy recorded in docs/mnist.md for each committed checkpoint (None: not recorded yet)
RECORDED = {"s4": 0.9944, "s5": 0.9955}  # reporting seed 101 of `eva seeds --config configs/<name>.yaml` (final epoch)


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_committed_checkpoint_reproduces_recorded_accuracy_on_real_mnist(name, tmp_path, monkeypatch):
    """``eva test`` on the committed checkpoint gives the accuracy in docs/mnist.md."""
    from eva_lightning.cli import EvaCLI
    from eva_lightning.data import sources
    from eva_lightning.data.datasets import MNIST

    data = Path(os.environ.get("EVA_DATA_DIR", "data")).resolve()  # before the chdir below
    if not sources.torchvision_present(MNIST.torchvision, data):
        pytest.skip(f"real MNIST not found under EVA_DATA_DIR={data}")
    ckpt = ROOT / "checkpoints" / f"{name}.ckpt"
    recorded = RECORDED[name]
    if not ckpt.exists() or recorded is None:
        pytest.skip(f"{ckpt.name} is not committed yet or its accuracy is not recorded in RECORDED")
    monkeypatch.chdir(tmp_path)
    cli = EvaCLI(
        args=["--config", str(ROOT / "configs" / f"{name}.yaml"), "--data.data_dir", str(data), "--data.num_workers", "0",
              "--data.batch_size", "1000", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false"],
        run=False,
    )
    acc = cli.trainer.test(cli.model, cli.datamodule, ckpt_path=str(ckpt), verbose=False)[0]["test/acc"]
    assert acc == pytest.approx(recorded, abs=5e-4)
