"""`aelab train --variant NAME`: train one variant, test its best checkpoint, save it and track it in MLflow.

`--variant tuned` trains the tuned base variant with the best trial of `aelab tune` (`data/tune/best_params.yaml`).
The training library is `aelab.training`; this stage only reads the params and the prepared data and reports.
"""

from __future__ import annotations

from rich.console import Console

from aelab.config import Params
from aelab.data.prepared import load_prepared
from aelab.paths import BEST_PARAMS_FILE, MODELS_DIR, PREPARED_DIR, TUNED
from aelab.training.run import train_variant
from aelab.tuning.space import tuned_params


def main(params: Params, variant: str) -> None:
    """`variant` is one of `VARIANTS`, or `tuned`: the tuned base variant with the best params of `aelab tune`."""
    name = variant
    if variant == TUNED:
        params, variant = tuned_params(params, BEST_PARAMS_FILE)
    result = train_variant(params, variant, load_prepared(PREPARED_DIR), name=name)
    if result.run_id is None:  # a non-zero DDP rank: rank zero reports
        return
    m = result.metrics
    summary = f"test/mse {m['test/mse']:.5g}, best epoch {m['best_epoch']:.0f} of {m['epochs']:.0f}"
    written = "metrics.json, dvclive/" if (MODELS_DIR / name / "dvclive").exists() else "metrics.json"
    Console(stderr=True).print(
        f"trained {name}: {summary} -> {MODELS_DIR / name}/ ({written}), MLflow run {result.run_id}",
        soft_wrap=True,
    )
