"""Learning-rate schedules as multipliers of optimizer.lr per step: warmup, then constant, step, cosine or
one-cycle (scheduler.*)."""

from __future__ import annotations

import math
from collections.abc import Callable

from multibox.config import Config


def lr_multiplier(config: Config, total_steps: int) -> Callable[[int], float]:
    """Per-step multiplier of the base rate: linear warmup, then multistep, cosine or constant;
    or one-cycle (linear rise from warmup_factor over pct_start of the run, then cosine to min_lr_ratio)."""
    sched = config.scheduler
    if sched.name == "onecycle":
        return _one_cycle(sched.warmup_factor, sched.min_lr_ratio, sched.pct_start, total_steps)
    steps_per_epoch = total_steps / config.train.epochs
    milestones = [round(m * steps_per_epoch) for m in sched.milestones]
    warmup = min(sched.warmup_steps, total_steps)

    def multiplier(step: int) -> float:
        if step < warmup:
            alpha = step / warmup
            warm = sched.warmup_factor * (1 - alpha) + alpha
        else:
            warm = 1.0
        if sched.name == "multistep":
            return warm * sched.gamma ** sum(step >= m for m in milestones)
        if sched.name == "cosine":
            return warm * _cosine(step / total_steps, sched.min_lr_ratio)
        return warm

    return multiplier


def _cosine(progress: float, floor: float) -> float:
    """Half a cosine from 1 at progress 0 down to `floor` at progress 1 (and after)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _one_cycle(start: float, floor: float, pct_start: float, total_steps: int) -> Callable[[int], float]:
    rise = max(1, round(pct_start * total_steps))

    def multiplier(step: int) -> float:
        if step < rise:
            return start + (1 - start) * step / rise
        return _cosine((step - rise) / max(1, total_steps - rise), floor)

    return multiplier
