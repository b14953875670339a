"""`aelab evaluate`: what the codes are good for, per method and for PCA and the raw inputs.

Metrics (one JSON file declared under `metrics:` in dvc.yaml):
- `recon_mse`: per-pixel test reconstruction MSE; `recon_sse`: summed squared error per test sample;
- `probe_accuracy`: logistic regression fitted on train codes, scored on test codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aelab.config import Params
from aelab.data.prepared import PreparedData, load_prepared
from aelab.errors import DataError
from aelab.paths import CODES_DIR, METRICS_FILE, PREPARED_DIR


def probe_accuracy(params: Params, train_x, train_y, test_x, test_y) -> float:
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(
            C=params.evaluate.probe_c, max_iter=params.evaluate.probe_max_iter, random_state=params.seed
        ),
    )
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def reconstruction_errors(clean: np.ndarray, reconstruction: np.ndarray) -> dict[str, float]:
    squared = (reconstruction.astype(np.float64) - clean.astype(np.float64)) ** 2
    return {"recon_mse": float(squared.mean()), "recon_sse": float(squared.sum(axis=1).mean())}


def evaluate_method(params: Params, folder: Path, data: PreparedData) -> dict[str, float]:
    with np.load(folder / "codes.npz") as codes:
        metrics = reconstruction_errors(data.test.x, codes["test_reconstruction"])
        metrics["code_dim"] = int(codes["train_codes"].shape[1])
        if data.train.y is not None:
            metrics["probe_accuracy"] = probe_accuracy(
                params, codes["train_codes"], data.train.y, codes["test_codes"], data.test.y
            )
    return metrics


def evaluate(params: Params, data: PreparedData, codes_dir: Path = CODES_DIR) -> dict[str, dict[str, float]]:
    methods = sorted(p.name for p in codes_dir.iterdir() if (p / "codes.npz").exists()) if codes_dir.exists() else []
    if not methods:
        raise DataError(f"{codes_dir}: no codes found; run `aelab reduce` first")
    results = {method: evaluate_method(params, codes_dir / method, data) for method in methods}
    if data.train.y is not None:
        results["raw"] = {
            "probe_accuracy": probe_accuracy(params, data.train.x, data.train.y, data.test.x, data.test.y)
        }
    return results


def main(params: Params) -> None:
    results = evaluate(params, load_prepared(PREPARED_DIR))
    METRICS_FILE.parent.mkdir(parents=True, exist_ok=True)
    METRICS_FILE.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    console = Console(stderr=True)
    for method, metrics in results.items():
        console.print(f"{method}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
