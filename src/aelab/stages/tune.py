"""`aelab tune`: an Optuna search over the sparse variant's hidden units, sparsity target and penalty weight
(optionally depth and learning rate), or over the conv variant's number and width of conv blocks, code size and
sparsity; resumable, shared by parallel workers, every trial a nested MLflow run.

The search library is `aelab.tuning`; the best trial's params go to `data/tune/best_params.yaml`, which
`aelab train --variant tuned` reads.
"""

from __future__ import annotations

from aelab.config import Params
from aelab.data.prepared import load_prepared
from aelab.errors import ConfigError
from aelab.paths import PREPARED_DIR
from aelab.tuning.search import tune


def main(params: Params, workers: int = 1, argv: list[str] | None = None, summary: bool = True) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    tune(params, load_prepared(PREPARED_DIR), workers, argv, summary)
