"""The LR schedule (``Schedule``) and the optimiser and scheduler built from it (also by benchmarks/plain_loop.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim import lr_scheduler

from eva_lightning.core.errors import EvaError


@dataclass(frozen=True)
class Schedule:
    """The LR schedule.

    Args:
        name: ``none`` | ``step`` | ``cosine`` | ``plateau`` | ``onecycle``.
        step_size: ``step``: epochs between drops.
        gamma: ``step``: factor per drop.
        factor: ``plateau``: factor per drop.
        patience: ``plateau``: flat epochs of ``val/loss`` before a drop.
        min_lr: ``cosine``/``plateau``: lower bound.
        peak_epoch: ``onecycle``: the LR reaches the optimiser's LR (the max) at the first step
            of this epoch (counted from 0).
        anneal: ``onecycle``: ``linear`` or ``cos`` ramps.
        div_factor: ``onecycle``: starting LR = max / div_factor.
        final_div_factor: ``onecycle``: last LR = starting LR / final_div_factor (1: no annihilation).
    """

    name: Literal["none", "step", "cosine", "plateau", "onecycle"] = "none"
    step_size: int = 10
    gamma: float = 0.1
    factor: float = 0.1
    patience: int = 3
    min_lr: float = 0.0
    peak_epoch: float = 5
    anneal: Literal["linear", "cos"] = "linear"
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        # every field, whatever the name: a nonsense value is a mistake even where this schedule ignores it
        problems = {
            "step_size": (self.step_size >= 1, "at least 1 (epochs between LR drops)"),
            "gamma": (self.gamma > 0, "> 0 (the factor per drop; 0.1 divides the LR by 10)"),
            "factor": (0 < self.factor < 1, "in (0, 1) (the factor per drop; 0.1 divides the LR by 10)"),
            "patience": (self.patience >= 0, ">= 0 (flat epochs before a drop)"),
            "min_lr": (self.min_lr >= 0, ">= 0 (the lowest LR)"),
            "peak_epoch": (self.peak_epoch > 0, "> 0 (the epoch, counted from 0, whose first step has the peak LR)"),
            "div_factor": (self.div_factor >= 1, ">= 1 (starting LR = peak LR / div_factor)"),
            "final_div_factor": (self.final_div_factor > 0, "> 0 (last LR = starting LR / final_div_factor)"),
        }
        for name, (ok, rule) in problems.items():
            if not ok:
                raise EvaError(f"model.init_args.schedule.{name}={getattr(self, name)} is impossible: it must be {rule}")

    @property
    def interval(self) -> Literal["step", "epoch", "plateau"]:
        """When the scheduler steps: after every batch, every epoch, or every epoch with ``val/loss``."""
        if self.name in ("cosine", "onecycle"):
            return "step"
        return "plateau" if self.name == "plateau" else "epoch"


# in checkpoints' hyper-parameters: weights_only loading must accept it, also under its former path
torch.serialization.add_safe_globals([Schedule, (Schedule, "eva_lightning.core.module.Schedule")])


def check_span(schedule: Any, max_epochs: int | None, max_steps: int | None = None) -> None:
    """Raise an :class:`EvaError` if ``schedule`` (a :class:`Schedule`, or the CLI's parsed namespace of one) cannot
    span ``max_epochs`` (-1: without end) and ``max_steps`` (None or -1: no limit); who asks: docs/internals.md."""
    name, peak = getattr(schedule, "name", None), getattr(schedule, "peak_epoch", None)
    if name not in ("cosine", "onecycle") or max_steps not in (None, -1):
        return
    if max_epochs == -1:
        raise EvaError(f"model.init_args.schedule.name={name} with trainer.max_epochs=-1: the schedule spans "
                       "the whole run, and -1 trains without end; set trainer.max_epochs (or trainer.max_steps), "
                       "or use schedule.name none or plateau for an open-ended run")
    if (name == "onecycle" and isinstance(max_epochs, int) and max_epochs >= 1 and isinstance(peak, (int, float))
            and not peak < max_epochs):
        raise EvaError(f"model.init_args.schedule.peak_epoch={peak} is outside the run "
                       f"(trainer.max_epochs={max_epochs}): choose a peak epoch below {max_epochs}, or train longer")


#: the layers whose parameters ``param_groups`` puts in the scaled group
NORM_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)


def param_groups(module: torch.nn.Module, norm_lr_scale: float = 1.0) -> list:
    """``module``'s parameters for :func:`make_optimizer`: one list, or with ``norm_lr_scale != 1`` two groups, the
    norm layers' parameters marked ``lr_scale`` (their LR times it, their weight decay divided by it)."""
    if norm_lr_scale == 1.0:
        return list(module.parameters())
    norm = {id(p): p for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    rest = [p for p in module.parameters() if id(p) not in norm]
    return [{"params": rest}, {"params": list(norm.values()), "lr_scale": norm_lr_scale}]


def make_optimizer(factory: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
                   params: Iterable, lr: float | None = None) -> torch.optim.Optimizer:
    """The configured optimiser over ``params`` (parameters or :func:`param_groups`' groups); ``lr``, if set, replaces
    its LR in every group; a group's ``lr_scale`` then multiplies its LR and divides its weight decay."""
    opt = factory(params)
    for group in opt.param_groups:
        if lr is not None:
            group["lr"] = lr
        scale = group.get("lr_scale", 1.0)
        group["lr"] *= scale
        if "weight_decay" in group:
            group["weight_decay"] /= scale
    return opt


def make_scheduler(opt: torch.optim.Optimizer, schedule: Schedule, total_steps: int | None = None,
                   epochs: int | None = None, hold: bool = False) -> lr_scheduler.LRScheduler:
    """The scheduler for ``schedule`` (``opt``'s LR is a one-cycle's peak); ``cosine`` and ``onecycle`` need
    ``total_steps`` and ``epochs``; ``hold`` keeps a one-cycle's LR constant (a ``fast_dev_run``)."""
    s = schedule
    if s.name == "none":
        # a constant schedule, so the LR monitor logs it under the same name `lr` as the others
        return lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    if s.name == "step":
        return lr_scheduler.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
    if s.name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr)
    if total_steps is None or epochs is None:
        raise ValueError(f"a {s.name} schedule needs total_steps and epochs")
    if s.name == "cosine":
        return lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=s.min_lr)
    if hold or total_steps < 3:  # too few steps for a one-cycle: hold the LR
        return lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    epochs = max(1, epochs)
    peak_step = round(s.peak_epoch * total_steps / epochs)
    if not 0 < peak_step < total_steps - 1:
        raise EvaError(f"schedule.peak_epoch={s.peak_epoch} is outside the run ({epochs} epochs, {total_steps} steps): "
                       "choose a peak epoch between 0 and trainer.max_epochs")
    # OneCycleLR's warm-up ends at step pct_start*total - 1, so +1 puts the max on peak_step
    return lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total_steps,
                                   pct_start=(peak_step + 1) / total_steps, anneal_strategy=s.anneal,
                                   div_factor=s.div_factor, final_div_factor=s.final_div_factor, cycle_momentum=False)
