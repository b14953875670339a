"""`aelab evaluate`: what the codes are good for, per method, against PCA and the raw inputs.

Reads `data/prepared`, `data/codes/<method>` (from `reduce`) and `data/models/<variant>` (from `train`); runs the
study of `aelab.evaluation.study`; writes the headline metrics `data/metrics/<method>.json` (the metrics in
dvc.yaml), the full set `data/evaluation/all_metrics.json` and the tables and figures in `data/evaluation/`, and
logs them to each variant's MLflow run and to baseline runs of PCA and the raw inputs.
"""

from __future__ import annotations

import json

from rich.console import Console

from aelab.config import Params
from aelab.data.prepared import load_prepared
from aelab.evaluation.headline import write_headlines
from aelab.evaluation.runs import log_evaluation
from aelab.evaluation.study import evaluate
from aelab.paths import ALL_METRICS_FILE, METRICS_DIR, MODELS_DIR, PREPARED_DIR
from aelab.threads import limit_threads

HEADLINE = ("recon_sse", "explained_variance", "probe_accuracy", "knn_accuracy", "oneclass/auroc_mean")


def main(params: Params) -> None:
    with limit_threads(params.evaluate.num_threads):
        results, outputs = evaluate(params, load_prepared(PREPARED_DIR))
    ALL_METRICS_FILE.parent.mkdir(parents=True, exist_ok=True)
    ALL_METRICS_FILE.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_headlines(results, METRICS_DIR)
    logged = log_evaluation(params, results, outputs, MODELS_DIR, ALL_METRICS_FILE)
    console = Console(stderr=True)
    for method, metrics in results.items():
        console.print(f"{method}: " + ", ".join(f"{k} {metrics[k]:.4g}" for k in HEADLINE if k in metrics))
    console.print(
        f"headline metrics -> {METRICS_DIR}/, all metrics -> {ALL_METRICS_FILE}, figures -> {outputs.root}/, "
        f"MLflow runs of: {', '.join(logged) or 'none'}",
        soft_wrap=True,
    )
