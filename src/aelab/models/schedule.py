"""The learning-rate schedule (`train.lr_schedule`, `train.warmup_epochs`), stepped once per epoch.

Long runs (Hinton and Salakhutdinov's MNIST autoencoder) end lower with a rate that falls as training converges:
`cosine` lowers it from `lr` towards zero along a half cosine over the epochs after the warm-up. `warmup_epochs`
raises it linearly first (lr / (w + 1), 2 lr / (w + 1), ...), which keeps Adam's first, poorly estimated steps
small for wide layers. `none` without warm-up leaves the optimiser alone (no scheduler at all).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from aelab.config import TrainConfig

SCHEDULES = ("none", "cosine")


def schedule_options(train: TrainConfig) -> dict[str, Any]:
    """The module constructor arguments for the schedule (they join `models.module_options`)."""
    return {"lr_schedule": train.lr_schedule, "warmup_epochs": train.warmup_epochs}


def lr_factor(epoch: int, schedule: str, warmup_epochs: int, max_epochs: int) -> float:
    """The multiple of `lr` used during `epoch` (0-based) of a run of `max_epochs`."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    if schedule == "cosine":
        span = max(1, max_epochs - warmup_epochs)
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch - warmup_epochs, span) / span))
    return 1.0


def build_schedule(
    optimizer: torch.optim.Optimizer, schedule: str, warmup_epochs: int, max_epochs: int
) -> dict[str, Any] | None:
    """Lightning's scheduler config (per epoch), or None where the rate stays constant."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
    if schedule == "none" and warmup_epochs == 0:
        return None
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_factor(epoch, schedule, warmup_epochs, max_epochs)
    )
    return {"scheduler": scheduler, "interval": "epoch"}
