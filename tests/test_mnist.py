"""S4/S5/S6 networks: the assignments' constraints, the README's parameter counts, the committed checkpoints."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from eva_lightning.assignments.s4 import S4Net
from eva_lightning.assignments.s5 import S5Net, SkeletonNet

ROOT = Path(__file__).resolve().parents[1]
MNIST_CONFIGS = sorted(p for p in (ROOT / "configs").glob("s[456]*.yaml"))


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize(
    "net, max_params, max_pools",
    [
        (S4Net(), 8_000, 2),  # S4: < 10k required, < 8k aimed for
        (S5Net(), 8_000, 2),  # S5 step 3-4
        (S5Net(norm="gbn"), 8_000, 2),  # S6 Ghost BN: same parameters
    ],
    ids=["s4", "s5", "s5-gbn"],
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


def test_main_job_is_s5_step4():
    """`make run` trains configs/s5.yaml: the same run as s5_step4.yaml."""
    main, step4 = (yaml.safe_load((ROOT / "configs" / n).read_text()) for n in ("s5.yaml", "s5_step4.yaml"))
    assert main == step4


def test_s6_configs_differ_only_in_regulariser_and_norm():
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "configs").glob("s6_*.yaml")}
    assert sorted(configs) == ["s6_gbn", "s6_l1_bn", "s6_l1_l2_bn", "s6_l1_l2_gbn", "s6_l2_bn"]
    for name, cfg in configs.items():
        args = cfg["model"]["init_args"]
        assert cfg["trainer"]["max_epochs"] == 25
        assert (args["l1"] > 0) == ("l1" in name)
        assert (args["optimizer"]["init_args"]["weight_decay"] > 0) == ("l2" in name)
        assert args["norm"] == ("gbn" if name.endswith("gbn") else "bn")
    rest = []
    for cfg in configs.values():
        cfg = yaml.safe_load(yaml.safe_dump(cfg))
        args = cfg["model"]["init_args"]
        for key in ("l1", "norm"):
            args.pop(key)
        args["optimizer"]["init_args"].pop("weight_decay")
        rest.append(cfg)
    assert all(r == rest[0] for r in rest)


def build_net(config: Path) -> nn.Module:
    """The configured network, built without the CLI (only the model's own arguments)."""
    model = yaml.safe_load(config.read_text())["model"]
    module, _, name = model["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    own = {k: v for k, v in model.get("init_args", {}).items() if k not in ("optimizer", "schedule")}
    return cls(in_channels=1, num_classes=10, **own).net


def readme_params() -> dict[str, int]:
    """``{config stem: parameters}`` from the tables of docs/readme/mnist.md."""
    rows = re.findall(r"\|\s*`?configs/(\w+)\.yaml`?\s*\|\s*([\d,]+)\s*\|", (ROOT / "docs/readme/mnist.md").read_text())
    return {stem: int(n.replace(",", "")) for stem, n in rows}


@pytest.mark.parametrize("config", MNIST_CONFIGS, ids=[c.stem for c in MNIST_CONFIGS])
def test_readme_table_parameter_counts(config):
    """The README's count is what ``eva summary`` prints (and what the net really holds)."""
    from eva_lightning.analysis.summary import summarize

    table = readme_params()
    assert config.stem in table, f"{config.name} missing from the docs/readme/mnist.md table"
    net = build_net(config).eval()
    assert summarize(net, (1, 28, 28)).params == n_params(net) == table[config.stem]


@pytest.mark.real_data
@pytest.mark.parametrize("name, recorded", [("s4", 0.9941), ("s5_step4", 0.9949)])
def test_committed_checkpoint_reproduces_recorded_accuracy_on_real_mnist(name, recorded, tmp_path, monkeypatch):
    """``eva test`` on the committed checkpoint gives the accuracy in docs/readme/mnist.md."""
    from eva_lightning.cli import EvaCLI
    from eva_lightning.data import sources

    data = Path(os.environ.get("EVA_DATA_DIR", "data")).resolve()  # before the chdir below
    if not sources.mnist_present(data):
        pytest.skip(f"real MNIST not found under EVA_DATA_DIR={data}")
    ckpt = ROOT / "checkpoints" / f"{name}.ckpt"
    monkeypatch.chdir(tmp_path)
    cli = EvaCLI(
        args=["--config", str(ROOT / "configs" / f"{name}.yaml"), "--data.data_dir", str(data), "--data.num_workers", "0",
              "--data.batch_size", "1000", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false"],
        run=False,
    )
    acc = cli.trainer.test(cli.model, cli.datamodule, ckpt_path=str(ckpt), verbose=False)[0]["test/acc"]
    assert acc == pytest.approx(recorded, abs=5e-4)
