"""GhostBatchNorm against a hand-computed per-chunk batch norm; the norm2d factory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from eva_lightning.assignments.s5 import S5Net
from eva_lightning.core.layers import GhostBatchNorm, norm2d

EPS = 1e-5


def manual_ghost_bn(x: torch.Tensor, vbs: int, weight, bias, momentum: float, rm, rv):
    """Per-chunk normalisation and the running-stat updates written out by hand."""
    n = x.shape[0]
    sizes = [len(c) for c in x.chunk(max(1, math.ceil(n / vbs)))] if n > vbs else [n]
    m = momentum / len(sizes)
    outs, start = [], 0
    rm, rv = rm.clone(), rv.clone()
    for size in sizes:
        c = x[start : start + size]
        start += size
        mean = c.mean(dim=(0, 2, 3))
        var = c.var(dim=(0, 2, 3), unbiased=False)
        count = c.numel() / c.shape[1]
        outs.append((c - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + EPS) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1))
        rm = (1 - m) * rm + m * mean
        rv = (1 - m) * rv + m * var * count / (count - 1)  # running var is the unbiased estimate
    return torch.cat(outs), rm, rv, sizes


def make_gbn(channels: int = 3, vbs: int = 4) -> GhostBatchNorm:
    torch.manual_seed(0)
    gbn = GhostBatchNorm(channels, virtual_batch_size=vbs)
    with torch.no_grad():  # non-trivial affine parameters and running stats
        gbn.weight.uniform_(0.5, 2.0)
        gbn.bias.uniform_(-1.0, 1.0)
        gbn.running_mean.uniform_(-0.5, 0.5)
        gbn.running_var.uniform_(0.5, 2.0)
    return gbn


@pytest.mark.parametrize(
    "n, expected_sizes",
    [(8, [4, 4]), (12, [4, 4, 4]), (10, [4, 4, 2]), (9, [3, 3, 3]), (3, [3]), (4, [4])],
    ids=["divisible", "three-chunks", "non-divisible", "chunk-rounding", "smaller-than-virtual", "equal"],
)
def test_train_output_and_running_stats_match_manual_per_chunk(n, expected_sizes):
    gbn = make_gbn(vbs=4)
    x = torch.randn(n, 3, 5, 5) * 2 + 1
    want, rm, rv, sizes = manual_ghost_bn(x, 4, gbn.weight.detach(), gbn.bias.detach(), 0.1, gbn.running_mean, gbn.running_var)
    assert sizes == expected_sizes
    gbn.train()
    out = gbn(x)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gbn.running_mean, rm, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gbn.running_var, rv, rtol=1e-6, atol=1e-6)
    assert gbn.momentum == 0.1  # restored after the forward pass


def test_ghost_batches_differ_from_plain_bn_in_training():
    gbn = make_gbn(vbs=4)
    bn = nn.BatchNorm2d(3)
    bn.load_state_dict(gbn.state_dict())
    x = torch.randn(8, 3, 5, 5)
    x[4:] += 3.0  # the second virtual batch has another mean: ghost BN centres each half separately
    out = gbn.train()(x)
    assert not torch.allclose(out, bn.train()(x), atol=1e-3)
    assert out[4:].mean().abs() < 0.5 + gbn.bias.abs().max()  # second half re-centred, not shifted by +3


def test_batch_not_larger_than_virtual_is_plain_bn():
    gbn = make_gbn(vbs=16)
    bn = nn.BatchNorm2d(3)
    bn.load_state_dict(gbn.state_dict())
    x = torch.randn(5, 3, 4, 4)
    torch.testing.assert_close(gbn.train()(x), bn.train()(x))
    torch.testing.assert_close(gbn.running_mean, bn.running_mean)
    torch.testing.assert_close(gbn.running_var, bn.running_var)


def test_momentum_scaling_keeps_running_stats_comparable_to_plain_bn():
    # every chunk holds the same samples, so each chunk's statistics equal the whole batch's:
    # with momentum / chunks the running mean moves 1-(1-m/k)^k ~ m of the way, like plain BN
    gbn = GhostBatchNorm(2, virtual_batch_size=8)
    bn = nn.BatchNorm2d(2)
    x = (torch.randn(8, 2, 3, 3) + 5.0).repeat(4, 1, 1, 1)  # 32 samples, 4 chunks
    gbn.train()(x)
    bn.train()(x)
    k, m = 4, 0.1
    torch.testing.assert_close(gbn.running_mean, bn.running_mean * (1 - (1 - m / k) ** k) / m, rtol=1e-5, atol=1e-6)
    assert torch.allclose(gbn.running_mean, bn.running_mean, rtol=0.05)  # without scaling: 0.34 vs 0.1 of the way


def test_eval_uses_running_statistics_for_any_batch_size():
    gbn = make_gbn(vbs=4)
    gbn.train()(torch.randn(10, 3, 5, 5))
    gbn.eval()
    x = torch.randn(7, 3, 5, 5)
    want = (x - gbn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(gbn.running_var.view(1, -1, 1, 1) + EPS)
    want = want * gbn.weight.view(1, -1, 1, 1) + gbn.bias.view(1, -1, 1, 1)
    before = gbn.running_mean.clone()
    torch.testing.assert_close(gbn(x), want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gbn(x[:1]), want[:1].detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(gbn.running_mean, before)


def test_gradients_flow_through_every_chunk():
    gbn = make_gbn(vbs=4)
    x = torch.randn(10, 3, 5, 5, requires_grad=True)
    (gbn.train()(x) * torch.randn(10, 3, 5, 5)).sum().backward()
    assert x.grad is not None and (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()
    assert gbn.weight.grad is not None


def test_norm2d_factory_and_checkpoint_compatible_networks():
    assert type(norm2d("bn", 4)) is nn.BatchNorm2d
    g = norm2d("gbn", 4, virtual_batch_size=16)
    assert isinstance(g, GhostBatchNorm) and g.virtual_batch_size == 16
    with pytest.raises(ValueError, match="unknown norm kind"):
        norm2d("ln", 4)
    bn_net, gbn_net = S5Net(norm="bn"), S5Net(norm="gbn", virtual_batch_size=16)
    assert sum(isinstance(m, GhostBatchNorm) for m in gbn_net.modules()) == sum(
        isinstance(m, nn.BatchNorm2d) for m in bn_net.modules()
    ) > 0
    gbn_net.load_state_dict(bn_net.state_dict())  # same keys and shapes: a BN checkpoint loads into GBN
