"""benchmarks/plain_loop.py runs configs/cifar10_fast.yaml's recipe by hand as eva fit does (the eva/plain reference)."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import ROOT, TINY_FAST_CIFAR, write_cifar_jpeg

sys.path.insert(0, str(ROOT / "benchmarks"))
from plain_loop import build, plain_fit  # noqa: E402


# bf16-mixed: what the config's precision auto picks on a CPU (or GPU) that computes bf16 natively
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_plain_loop_trains_the_cifar10_fast_recipe_as_eva_fit(tmp_path, monkeypatch, one_thread, precision):
    """Same seed, same config: whitening fitted, lookahead every 5 steps, the test with 6-view TTA; both loops end
    at the same training loss, held-out and test accuracy."""
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(ROOT / "configs" / "cifar10_fast.yaml"), "--data.data_dir", str(write_cifar_jpeg(tmp_path)),
            *TINY_FAST_CIFAR, "--trainer.precision", precision]
    eva = build(args[1], args[2:])
    eva.trainer.fit(eva.model, eva.datamodule)
    eva_val = {k: float(v) for k, v in eva.trainer.callback_metrics.items()}
    eva_test = eva.trainer.test(eva.model, datamodule=eva.datamodule, verbose=False)[0]["test/acc"]

    plain_cli = build(args[1], args[2:])
    before = plain_cli.model.net.whiten.weight.clone()
    plain = plain_fit(plain_cli, log=lambda *_: None)
    assert bool(plain_cli.model.net.whiten.fitted) and not torch.equal(plain_cli.model.net.whiten.weight, before)
    assert plain["images"] == 2 * 72 and plain_cli.model.tta == "flip_translate"  # 80 images, 8 held out
    assert plain["train_loss"][-1] == pytest.approx(eva_val["train/loss"], rel=1e-4)
    assert plain["val_acc"][-1] == pytest.approx(eva_val["val/acc"], abs=1e-6)
    assert plain["test_acc"] == pytest.approx(eva_test, abs=1e-6)
    for k, v in eva.model.net.state_dict().items():  # both end on the average of the same updates
        torch.testing.assert_close(plain_cli.model.net.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)
