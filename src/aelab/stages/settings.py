"""`aelab settings`: what each variant of `pipeline.variants` trains with, one file per variant.

Writes `data/settings/<variant>.json`: the params that training the variant reads, resolved (its section, the shared
model and train settings, the epochs it actually trains for, the seed). Each `train` stage depends on its file, not
on params.yaml, so a change reaches only the variants that read it (`train.max_epochs` does not re-train a variant
with its own `max_epochs`). Cheap: no torch import.
"""

from __future__ import annotations

import json

from rich.console import Console

from aelab.config import Params
from aelab.fileio import atomic_write_bytes
from aelab.paths import SETTINGS_DIR
from aelab.training.digest import training_settings


def main(params: Params) -> None:
    SETTINGS_DIR.mkdir(parents=True, exist_ok=True)
    for variant in params.pipeline.variants:
        text = json.dumps(training_settings(params, variant), indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(text.encode(), SETTINGS_DIR / f"{variant}.json")
    names = ", ".join(params.pipeline.variants)
    Console(stderr=True).print(f"training settings of {names} -> {SETTINGS_DIR}/", soft_wrap=True)
