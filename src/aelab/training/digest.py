"""The one run digest: which settings make two trainings the same training (and may share checkpoints)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

PLACEMENT_KEYS = frozenset(
    {
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
        "progress_bar",
        "log_every_n_steps",
        "check_finite_every_n_steps",
        "compile",
        "data_on_device",
        "resume",
    }
)
"""Where and how fast a training runs, not what it computes: a run preempted on 4 GPUs may resume on 2 (the
global batch does not depend on the number of processes), or with another logging interval."""


def without_placement(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` (a train section or module options) without the keys in `PLACEMENT_KEYS`."""
    return {k: v for k, v in settings.items() if k not in PLACEMENT_KEYS}


def digest(key: Any, length: int = 12) -> str:
    """A short stable hash of a JSON-able key (sorted keys, so dict order never matters)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:length]
