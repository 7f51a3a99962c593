"""Receptive field / parameter summary against hand-worked values, and ``eva summary`` without data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eva_lightning.analysis.summary import summarize
from eva_lightning.tools.summary import main


def conv(cin: int, cout: int, k: int = 3, **kw) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=kw.pop("padding", k // 2 * kw.get("dilation", 1)), **kw)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_plain_stack():
    # 3x3 convs: RF 3, 5; maxpool 2: 6 (jump 2); 3x3 conv: 6 + 2*2 = 10; 1x1: 10
    net = nn.Sequential(conv(1, 8), nn.ReLU(), conv(8, 8), nn.ReLU(), nn.MaxPool2d(2), conv(8, 16), conv(16, 10, 1))
    s = summarize(net, (1, 28, 28))
    assert [r.rf for r in s.rows] == [3, 3, 5, 5, 6, 10, 10]
    assert [r.jump for r in s.rows] == [1, 1, 1, 1, 2, 2, 2]
    assert s.receptive_field == 10 and s.jump == 2
    assert s.rows[-1].output_shape == (10, 14, 14)
    assert s.params == n_params(net)
    assert s.maxpools == 1
    assert not (s.has_linear or s.has_dilated or s.has_depthwise_separable or s.has_gap)


def test_strided_dilated_stack():
    # conv3 s2: 3 (j 2); conv3 dilation 2: 3 + 2*2*2 = 11; conv3: 11 + 2*2 = 15; conv3 s2: 19 (j 4); conv3: 27
    net = nn.Sequential(
        conv(3, 8, stride=2), conv(8, 8, dilation=2), conv(8, 8), conv(8, 8, stride=2), conv(8, 8),
    )
    s = summarize(net, (3, 32, 32))
    assert [r.rf for r in s.rows] == [3, 11, 15, 19, 27]
    assert [r.jump for r in s.rows] == [2, 2, 2, 4, 4]
    assert s.has_dilated and s.maxpools == 0
    assert s.params == n_params(net)


def test_depthwise_separable_block():
    # stem 3x3: 3; depthwise 3x3: 5; BN/ReLU; pointwise 1x1: 5; GAP keeps 5 (global); Linear
    net = nn.Sequential(
        conv(3, 16), conv(16, 16, groups=16), nn.BatchNorm2d(16), nn.ReLU(), conv(16, 32, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    s = summarize(net, (3, 32, 32))
    assert s.has_depthwise_separable and s.has_gap and s.has_linear
    assert [r.rf for r in s.rows[:5]] == [3, 5, 5, 5, 5]
    assert s.rows[5].is_global and s.receptive_field == 5
    assert s.params == n_params(net)
    # grouped (not depthwise) conv followed by 1x1 is not depthwise-separable
    plain = nn.Sequential(conv(4, 8, groups=2), conv(8, 8, 1))
    assert not summarize(plain, (4, 8, 8)).has_depthwise_separable


class Residual(nn.Module):
    """conv3 s2 → conv3 on the main path, 1x1 s2 on the shortcut, added in place."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv(c, 2 * c, stride=2), conv(2 * c, 2 * c)
        self.shortcut = conv(c, 2 * c, 1, stride=2)

    def forward(self, x):
        out = self.conv2(torch.relu(self.conv1(x)))
        out += self.shortcut(x)
        return out


def test_residual_block_takes_larger_path():
    # stem 3 (j 1); main: 3 + 2 = 5 (j 2), 5 + 2*2 = 9; shortcut 1x1: 3 (j 2); sum → 9; then another conv3: 13
    net = nn.Sequential(conv(3, 4), Residual(4), conv(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    s = summarize(net, (3, 16, 16))
    rf = {r.name: r.rf for r in s.rows}
    assert rf["0"] == 3 and rf["1.conv1"] == 5 and rf["1.conv2"] == 9 and rf["1.shortcut"] == 3
    assert rf["2"] == 13 and s.receptive_field == 13 and s.jump == 2
    assert s.params == n_params(net)


def test_resnet18_known_receptive_field():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet18(num_classes=10)
    s = summarize(net, (3, 32, 32))
    assert s.receptive_field == 435  # the published ResNet-18 value
    assert s.params == n_params(net) == 11_181_642
    assert net.training  # mode restored


def test_eva_summary_needs_no_data(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model:\n  class_path: tiny.TinyNet\n"
        f"data:\n  dataset: cifar10\n  data_dir: {tmp_path / 'nothing-here'}\n  download: false\n"
        "trainer:\n  accelerator: cpu\n"
    )
    main(["--config", str(cfg)])
    out = capsys.readouterr().out
    # TinyNet: conv3 (3) → maxpool (4, j 2) → conv3 (8) → GAP
    assert "receptive field: 8 (jump 2)" in out
    assert "max-pools: 1" in out and "Linear layer: no" in out
    assert "3x32x32" in out and "10x16x16" in out
    # --input_shape (a parser argument of the summary's CLI) replaces the data module's input
    main(["--config", str(cfg), "--input_shape", "3", "64", "64"])
    out = capsys.readouterr().out
    assert "3x64x64" in out and "10x32x32" in out and "3x32x32" not in out
