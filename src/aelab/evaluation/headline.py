"""The headline metrics: the few numbers per method that `dvc metrics show` and `dvc exp show` compare.

DVC prints one row per metrics file and one column per key, so the headline is one small file per method
(`data/metrics/<method>.json`, five keys at most) and the table stays readable in a normal terminal; the full set
(`data/evaluation/all_metrics.json`) is an ordinary output that `aelab report` reads.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

HEADLINE_KEYS = {
    "mse": "recon_mse",
    "probe": "probe_accuracy",
    "knn": "knn_accuracy",
    "auroc": "oneclass/auroc_mean",
}
"""Headline key -> key in the full metrics of a method (plus `psnr`). Short keys, because `dvc exp show` names each
column `data/metrics/<method>.json:<key>`."""

_PSNR = re.compile(r"^denoise/(.+)/psnr$")


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """One method's headline: reconstruction MSE, probe and kNN accuracy, mean one-class AUROC and the best
    denoising PSNR over the configured corruptions (whichever of them the method has)."""
    picked = {short: float(metrics[key]) for short, key in HEADLINE_KEYS.items() if key in metrics}
    psnr = [float(v) for k, v in metrics.items() if _PSNR.match(k)]
    if psnr:
        picked["psnr"] = max(psnr)
    return dict(sorted(picked.items()))


def headlines(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Every method's headline; methods without any headline metric are left out."""
    return {method: found for method, metrics in sorted(results.items()) if (found := headline(metrics))}


def write_headlines(results: dict[str, dict[str, float]], folder: Path) -> list[Path]:
    """`folder/<method>.json` per method; the folder is emptied first so that removed methods leave no file."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = []
    for method, values in headlines(results).items():
        path = folder / f"{method}.json"
        path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
