"""GradCAM: a hand-computed map, batch invariance, and the model left exactly as found."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from eva_lightning.analysis.gradcam import gradcam, overlay
from eva_lightning.callbacks import GradCAMGrid
from eva_lightning.core.errors import EvaError


def linear_cam_net(conv_w: list[float], fc_w: list[list[float]]) -> nn.Sequential:
    """x → 1×1 conv (no bias, one weight per channel) → GAP → linear (no bias).

    With A_k = conv_w[k]·x, logit_c = Σ_k fc_w[c][k]·mean(A_k), so ∂logit_c/∂A_k = fc_w[c][k]/(H·W)
    everywhere: GradCAM's channel weights are fc_w[c][k]/(H·W) in closed form.
    """
    conv = nn.Conv2d(1, len(conv_w), 1, bias=False)
    fc = nn.Linear(len(conv_w), len(fc_w), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(conv_w).view(-1, 1, 1, 1))
        fc.weight.copy_(torch.tensor(fc_w))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


def test_gradcam_equals_hand_computed_map():
    conv_w, fc_w = [1.0, 2.0], [[1.0, -3.0], [0.5, 1.0]]
    net = linear_cam_net(conv_w, fc_w)
    x = torch.tensor([[1.0, -2.0, 3.0], [0.0, 4.0, -1.0], [2.0, 2.0, -3.0]]).view(1, 1, 3, 3)
    for c in (0, 1):
        # by hand: cam = relu(Σ_k (fc_w[c][k]/9)·conv_w[k]·x), then min-max to [0, 1]
        scale = sum(fc_w[c][k] / 9 * conv_w[k] for k in range(2))  # c=0: -5/9, c=1: 2.5/9
        cam = np.maximum(scale * x[0, 0].numpy(), 0)
        expected = (cam - cam.min()) / (cam.max() - cam.min())
        got = gradcam(net, x, "0", class_idx=torch.tensor([c]))
        assert got.shape == (1, 3, 3)
        np.testing.assert_allclose(got[0].numpy(), expected, atol=1e-6)
    # class 0's weight is negative: the brightest input pixel (3.0) is coldest, the darkest (-3.0) hottest
    got0 = gradcam(net, x, "0", class_idx=torch.tensor([0]))[0]
    assert got0[2, 2] == 1.0 and got0[0, 2] == 0.0
    # default class is the prediction
    pred = net(x).argmax(1)
    torch.testing.assert_close(gradcam(net, x, "0"), gradcam(net, x, "0", class_idx=pred))


def test_gradcam_upsamples_to_input():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    maps = gradcam(net, torch.randn(2, 1, 10, 10), "0")
    assert maps.shape == (2, 10, 10)
    assert maps.min() >= 0 and maps.max() <= 1


def small_bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )


def snapshot(net: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in net.state_dict().items()},
        "modes": [m.training for m in net.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in net.parameters()],
    }


def assert_same(net: nn.Module, before: dict) -> None:
    after = snapshot(net)
    assert after["modes"] == before["modes"]
    for k, v in before["state"].items():
        torch.testing.assert_close(after["state"][k], v, rtol=0, atol=0, msg=k)
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gradcam_batch_invariant_and_model_unchanged():
    net = small_bn_net()
    net.train()
    net[4].eval()  # a mixed state must come back as it was
    net[0].weight.grad = torch.ones_like(net[0].weight)  # a leftover grad must survive untouched
    before = snapshot(net)
    x = torch.randn(6, 3, 12, 12)
    batch = gradcam(net, x, "3")
    singles = torch.cat([gradcam(net, x[i : i + 1], "3") for i in range(6)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=1e-5)
    assert_same(net, before)
    assert all(h == {} for h in (net[3]._forward_hooks,)), "hook left behind"


def test_gradcam_inside_inference_mode_and_bad_layer():
    net = small_bn_net().eval()
    with torch.inference_mode():  # where Lightning's validation hooks run
        x = torch.randn(2, 3, 8, 8)
        maps = gradcam(net, x, "3")
    assert maps.shape == (2, 8, 8) and torch.isfinite(maps).all()
    with pytest.raises(EvaError, match="not found"):
        gradcam(net, x.clone(), "nope")


def test_overlay_is_rgb_uint8():
    img = overlay(torch.rand(1, 6, 7), torch.rand(6, 7))
    assert img.shape == (6, 7, 3) and img.dtype == np.uint8


class _Module(nn.Module):
    """A stand-in LightningModule for calling the callback's hooks directly."""

    gradcam_layer = "net.3"

    def __init__(self) -> None:
        super().__init__()
        self.net = small_bn_net()

    def forward(self, x):
        return self.net(x)


def test_gradcam_callback_leaves_model_unchanged_and_writes_png(tmp_path):
    module = _Module().train()
    module.net[0].weight.grad = torch.full_like(module.net[0].weight, 0.5)
    before = snapshot(module)
    trainer = SimpleNamespace(
        is_global_zero=True, sanity_checking=False, current_epoch=0, global_step=7, loggers=[],
        default_root_dir=str(tmp_path),
        datamodule=SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), classes=tuple("abcde")),
    )
    cb = GradCAMGrid(num_images=3, true_class=True)  # layer from the module's gradcam_layer
    cb.setup(trainer, module, "fit")
    cb.on_validation_epoch_start(trainer, module)
    with torch.inference_mode():
        for i in range(2):
            cb.on_validation_batch_end(trainer, module, None, (torch.randn(2, 3, 16, 16), torch.tensor([0, 1])), i)
        cb.on_validation_epoch_end(trainer, module)
    assert_same(module, before)
    assert cb.last_maps.shape == (3, 16, 16)
    png = tmp_path / "gradcam_epoch0.png"
    with Image.open(png) as im:
        assert im.size[0] > 300 and im.size[1] > 300
    with pytest.raises(EvaError, match="not a module"):
        GradCAMGrid(target_layer="net.99").setup(trainer, module, "fit")


def test_eval_mode_gives_every_module_its_own_mode_back_even_after_an_error():
    from eva_lightning.analysis.gradcam import eval_mode

    net = small_bn_net().train()
    net[1].eval()  # frozen on purpose: must stay in eval mode afterwards
    before = [m.training for m in net.modules()]
    with pytest.raises(RuntimeError, match="boom"), eval_mode(net):
        assert not any(m.training for m in net.modules())
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == before


def test_gradcam_of_a_compiled_network_hooks_the_eager_one(monkeypatch):
    # aot_eager reproduces the inductor failure ("differentiated Tensor ... not used in the graph")
    # without a C++ compile: the hooked activation lives inside the traced graph
    from functools import partial

    from tiny import TinyNet

    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="aot_eager"))
    torch.manual_seed(0)
    compiled = TinyNet(num_classes=4, in_channels=3, compile=True)
    compiled.setup("fit")
    x = torch.randn(3, 3, 16, 16)
    compiled(x)  # the compiled graph exists before GradCAM runs, as after a training step
    eager = TinyNet(num_classes=4, in_channels=3)
    eager.load_state_dict(compiled.state_dict())  # after the step: BatchNorm's running stats moved
    before = snapshot(compiled)
    torch.testing.assert_close(gradcam(compiled, x, "net.0"), gradcam(eager, x, "net.0"))
    assert_same(compiled, before)
    # a model compiled as a whole: its layers keep their eager names
    torch.testing.assert_close(gradcam(torch.compile(eager.net), x, "0"), gradcam(eager.net, x, "0"))
