"""The one run digest: which settings make two trainings the same training (and may share checkpoints)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aelab.config import Params

PLACEMENT_KEYS = frozenset(
    {
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
        "progress_bar",
        "log_every_n_steps",
        "check_finite_every_n_steps",
        "steps_per_call",
        "compile",
        "data_on_device",
        "resume",
    }
)
"""Where and how fast a training runs, not what it computes: a run preempted on 4 GPUs may resume on 2 (the
global batch does not depend on the number of processes), or with another logging interval or steps per call
(the same optimiser steps either way)."""


def without_placement(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` (a train section or module options) without the keys in `PLACEMENT_KEYS`."""
    return {k: v for k, v in settings.items() if k not in PLACEMENT_KEYS}


def digest(key: Any, length: int = 12) -> str:
    """A short stable hash of a JSON-able key (sorted keys, so dict order never matters)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:length]


def epochs(params: Params, variant: str) -> int:
    """The variant's (end-to-end) epochs: its own `max_epochs`, else `train.max_epochs`."""
    return params.variant(variant).max_epochs or params.train.max_epochs


def training_settings(params: Params, variant: str) -> dict[str, Any]:
    """Every param that training `variant` reads, resolved: its own section, the shared model and train settings
    (the epochs it trains for, not `train.max_epochs` when it has its own) and the seed. The `settings` stage writes
    it per variant so that each `train` stage depends on exactly these values (the data comes in as a file)."""
    train = without_placement(params.train.model_dump(mode="json", exclude={"max_epochs"}))
    return {
        "seed": params.seed,
        "model": params.model.model_dump(mode="json"),
        "variant": params.variant(variant).model_dump(mode="json"),
        "train": {**train, "epochs": epochs(params, variant)},
    }
