"""``eva summary``: per-layer shape, parameters, receptive field (tracked per *tensor*: docs/internals.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from eva_lightning.analysis.gradcam import eval_mode
from eva_lightning.core.errors import EvaError


@dataclass(frozen=True)
class _RF:
    rf: int = 1
    jump: int = 1
    depthwise: bool = False  # produced by a depthwise conv (possibly through BN/ReLU)
    is_global: bool = False  # after global pooling


@dataclass
class LayerRow:
    """One leaf module call."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    rf: int | None
    jump: int | None
    is_global: bool = False


@dataclass
class NetworkSummary:
    """What ``summarize`` found; ``table()`` renders it."""

    rows: list[LayerRow]
    params: int
    trainable_params: int
    receptive_field: int
    jump: int
    maxpools: int
    has_linear: bool
    has_depthwise_separable: bool
    has_dilated: bool
    has_gap: bool
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, ...]

    def table(self) -> str:
        yes = lambda b: "yes" if b else "no"  # noqa: E731
        header = ("layer", "type", "output shape", "params", "RF", "jump")
        lines = [header]
        for r in self.rows:
            rf = "-" if r.rf is None else (f"{r.rf} (global)" if r.is_global else str(r.rf))
            lines.append((r.name, r.type, "x".join(map(str, r.output_shape)), f"{r.params:,}", rf, "-" if r.jump is None else str(r.jump)))
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        fmt = lambda row: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        return "\n".join([
            fmt(lines[0]), rule, *map(fmt, lines[1:]), rule,
            f"input {'x'.join(map(str, self.input_shape))} -> output {'x'.join(map(str, self.output_shape))}",
            f"parameters: {self.params:,} ({self.trainable_params:,} trainable)",
            f"receptive field: {self.receptive_field} (jump {self.jump})",
            f"Linear layer: {yes(self.has_linear)} | max-pools: {self.maxpools} | "
            f"depthwise-separable: {yes(self.has_depthwise_separable)} | dilated conv: {yes(self.has_dilated)} | "
            f"global pooling: {yes(self.has_gap)}",
        ])


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _first(v: Any) -> int:
    """Square kernels/strides are the norm here; for a pair take the larger (the conservative RF)."""
    if isinstance(v, (tuple, list)):
        return int(max(v)) if v else 1
    return int(v)


def _grow(src: _RF, k: int, stride: int, dilation: int = 1, depthwise: bool | None = None) -> _RF:
    """The receptive field after a window of ``k`` taps ``dilation`` apart, moved ``stride`` at a time."""
    return _RF(src.rf + (k - 1) * dilation * src.jump, src.jump * stride,
               src.depthwise if depthwise is None else depthwise, src.is_global)


def _tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list, dict)):
        for o in obj.values() if isinstance(obj, dict) else obj:
            yield from _tensors(o)


class _Tracker(TorchFunctionMode):
    """Annotates every tensor the network makes with the receptive field of its pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.info: dict[int, _RF] = {}
        self.alive: list[torch.Tensor] = []  # keeps ids unique while tracking
        self.maxpools = 0
        self.has_linear = self.has_dilated = self.has_depthwise_separable = self.has_gap = False

    def mark(self, t: torch.Tensor, info: _RF) -> None:
        self.info[id(t)] = info
        self.alive.append(t)

    def get(self, t: torch.Tensor | None) -> _RF | None:
        return None if t is None else self.info.get(id(t))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [i for i in (self.get(t) for t in _tensors((args, kwargs))) if i is not None]
        if not ins:
            return out
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        src = self.get(x) or max(ins, key=lambda i: (i.rf, i.jump))
        new = _RF(rf=max(i.rf for i in ins), jump=max(i.jump for i in ins),
                  depthwise=any(i.depthwise for i in ins), is_global=any(i.is_global for i in ins))
        name = getattr(func, "__name__", "")
        if name == "conv2d":
            k = _first(args[1].shape[-2:])
            stride = _first(_arg(args, kwargs, 3, "stride", 1))
            dilation = _first(_arg(args, kwargs, 5, "dilation", 1))
            groups = int(_arg(args, kwargs, 6, "groups", 1))
            self.has_dilated |= dilation > 1 and k > 1
            depthwise = groups > 1 and groups == x.shape[1]
            self.has_depthwise_separable |= k == 1 and groups == 1 and src.depthwise
            new = _grow(src, k, stride, dilation, depthwise)
        elif name in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "lp_pool2d"):
            is_max = "max" in name
            k = _first(_arg(args, kwargs, 1, "kernel_size", 1))
            stride = _arg(args, kwargs, 2, "stride", None)
            stride = k if stride in (None, [], ()) else _first(stride)
            dilation = _first(_arg(args, kwargs, 4, "dilation", 1)) if is_max else 1
            self.maxpools += int(is_max)
            new = _grow(src, k, stride, dilation)
        elif name in ("adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"):
            size = _arg(args, kwargs, 1, "output_size", 1)
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            if all(s in (1, None) for s in size):
                self.has_gap = True
                new = _RF(src.rf, src.jump, False, True)
            else:  # adaptive pooling to n > 1: a window of about in/out with stride in//out
                k = max(-(-int(i) // int(o or i)) for i, o in zip(x.shape[-2:], size))
                s = max(int(i) // int(o or i) for i, o in zip(x.shape[-2:], size))
                new = _grow(src, k, s)
        elif name in ("mean", "amax", "sum", "max", "avg_pool", "logsumexp") and x is not None and x.dim() == 4:
            dims = _arg(args, kwargs, 1, "dim", None)
            dims = {d % 4 for d in ((dims,) if isinstance(dims, int) else (dims or ()))}
            if {2, 3} <= dims:
                self.has_gap = True
                new = _RF(src.rf, src.jump, False, True)
        elif name == "linear":
            self.has_linear = True
        for t in _tensors(out):
            if t is not x or name.endswith("_"):  # in-place ops keep the tensor: update it
                self.mark(t, new)
        return out


def summarize(net: nn.Module, input_shape: tuple[int, int, int]) -> NetworkSummary:
    """Run one zero image of ``input_shape`` (C, H, W) through ``net`` (eval mode, no grad: nothing changes)
    and report every leaf module."""
    if len(input_shape) != 3:
        raise EvaError(f"input_shape must be (C, H, W), got {input_shape}")
    rows: list[LayerRow] = []
    tracker = _Tracker()
    handles = []
    for name, module in net.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(mod, _inputs, output, name=name):
            t = next(_tensors(output), None)
            info = tracker.get(t)
            rows.append(LayerRow(
                name or type(mod).__name__, type(mod).__name__, tuple(t.shape[1:]) if t is not None else (),
                sum(p.numel() for p in mod.parameters(recurse=False)),
                info.rf if info else None, info.jump if info else None, bool(info and info.is_global),
            ))

        handles.append(module.register_forward_hook(hook))
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        with eval_mode(net), torch.no_grad():
            x = torch.zeros(1, *input_shape, device=device, dtype=dtype)
            with tracker:
                tracker.mark(x, _RF())
                out = net(x)
    finally:
        for h in handles:
            h.remove()
    out_t = next(_tensors(out), None)
    final = tracker.get(out_t)
    params = list(net.parameters())  # shared parameters once
    return NetworkSummary(
        rows=rows,
        params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        receptive_field=final.rf if final else max((r.rf for r in rows if r.rf is not None), default=1),
        jump=final.jump if final else 1,
        maxpools=tracker.maxpools,
        has_linear=tracker.has_linear or any(isinstance(m, nn.Linear) for m in net.modules()),
        has_depthwise_separable=tracker.has_depthwise_separable,
        has_dilated=tracker.has_dilated,
        has_gap=tracker.has_gap,
        input_shape=tuple(input_shape),
        output_shape=tuple(out_t.shape[1:]) if out_t is not None else (),
    )

