"""A one-class model you keep (`aelab oneclass`), with the threshold that turns its score into a decision.

The variant `oneclass.variant` is trained on the training rows whose label is one of `oneclass.normal` (label
values, strings included) and validated on the normal validation rows. Its score (`oneclass.score`) is a row's
mean squared reconstruction error, that error weighted per feature (`standardized`), or the error plus the code's
Mahalanobis distance from the normal training codes (`combined`); `aelab.serving.inference.RowScore` computes
each, here as in a kept bundle. The threshold is the (1 - `false_positive_rate`) quantile of the scores of the
normal validation rows, so about that share of normal rows is flagged, chosen without ever seeing an anomaly. A row
scoring above the threshold is an anomaly. The test split (normal and every other label) measures it: AUROC,
and precision, recall and the false-positive rate at the threshold (anomaly = positive).

Output: `data/models/oneclass/`, a model bundle that carries the normal labels and the threshold (used by
`aelab score` and `model.predict`), and its `metrics.json`. The trained network is cached under
`data/checkpoints/oneclass-model/<digest>/`, so a changed rate re-thresholds without retraining.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from aelab.config import Params, check_variants_fit_data
from aelab.data.labels import label_codes, label_names_of
from aelab.data.prepared import PreparedData
from aelab.errors import ConfigError, DataError
from aelab.evaluation.oneclass import (
    error_weights,
    fit_gaussian,
    normal_params,
    normal_subset,
    quiet_lightning,
    usual_size,
)
from aelab.models import load_model, save_model
from aelab.models.base import AutoencoderModule
from aelab.paths import MODEL_FILE, ONECLASS_MODEL_CHECKPOINTS
from aelab.serving.bundle import write_bundle
from aelab.serving.inference import AutoencoderInference
from aelab.training.run import checkpoint_dir, fit_module


@dataclass
class OneClassModel:
    module: AutoencoderModule
    normal: list[Any]
    """The normal label values."""
    threshold: float
    """A row scoring above it is an anomaly."""
    score: dict[str, Any]
    """What `RowScore` computes the score with (`oneclass.json` without the threshold)."""
    metrics: dict[str, Any]


def normal_codes(params: Params, data: PreparedData) -> tuple[list[int], list[Any]]:
    """Codes and values of `oneclass.normal`; no labels, no choice or an unknown value is a one-line error."""
    if data.train.y is None or data.val.y is None or data.test.y is None:
        raise DataError("oneclass: the data has no labels; set data.label_column (CSV) or data.labels_path (.npy)")
    names = label_names_of(data.meta, data.train.y)
    if params.oneclass.normal is None:
        allowed = ", ".join(str(n) for n in names)
        raise ConfigError(f"oneclass.normal: name the normal label value(s), e.g. [{names[0]}]; allowed: {allowed}")
    codes = label_codes(params.oneclass.normal, names, "oneclass.normal")
    return codes, [names[c] for c in codes]


def model_params(params: Params) -> Params:
    """The params the kept model trains with."""
    return normal_params(params, params.oneclass, "oneclass")


def checkpoint_folder(params: Params, subset: PreparedData, root: Path = ONECLASS_MODEL_CHECKPOINTS) -> Path:
    """`<root>/<run digest>`: one folder per (network, training settings, data, normal labels), not threshold."""
    return checkpoint_dir(model_params(params), params.oneclass.variant, subset, root)


def fit_normal(params: Params, subset: PreparedData, root: Path = ONECLASS_MODEL_CHECKPOINTS) -> AutoencoderModule:
    """The model of the normal rows: loaded if it was trained before, else trained (resumable) and cached."""
    folder = checkpoint_folder(params, subset, root)
    model_file = folder / MODEL_FILE
    if model_file.exists():
        return load_model(model_file)
    with quiet_lightning():
        module = fit_module(model_params(params), params.oneclass.variant, subset, folder).module.cpu().eval()
    save_model(module, folder / "model.tmp")
    (folder / "model.tmp").replace(model_file)  # complete or absent, never half-written
    return module


def row_scores(module: AutoencoderModule, x: np.ndarray, score: dict[str, Any] | None = None) -> np.ndarray:
    """The anomaly score of each (scaled) row, computed as a kept bundle computes it (`RowScore`)."""
    return AutoencoderInference.of(module, oneclass=score).compute("score", np.ascontiguousarray(x, np.float32))


def score_record(module: AutoencoderModule, subset: PreparedData, kind: str) -> dict[str, Any]:
    """What `RowScore` needs for the score `kind` (`oneclass.score`), fitted on the normal rows: the `standardized`
    weights and the `combined` code Gaussian on the training rows, the `combined` medians on the validation rows,
    which no part was fitted on (as `evaluate.oneclass` fits the scores of the same names)."""
    if kind == "mse":
        return {"score": "mse"}
    model = AutoencoderInference.of(module)
    train = np.ascontiguousarray(subset.train.x, np.float32)
    if kind == "standardized":
        return {"score": kind, "weights": error_weights(train, model.compute("reconstruction", train)).tolist()}
    density = fit_gaussian(model.compute("codes", train))
    record = {"score": kind, "code_location": density.location_.tolist(), "code_precision": density.precision_.tolist()}
    parts = AutoencoderInference.of(module, oneclass={**record, "medians": [1.0, 1.0]}).compute(
        "score_parts", np.ascontiguousarray(subset.val.x, np.float32)
    )
    return {**record, "medians": [usual_size(parts[:, 0]), usual_size(parts[:, 1])]}


def holdout_metrics(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUROC (normal vs the rest) and the decisions at the threshold, anomaly = positive."""
    flagged = scores > threshold
    precision, recall, f1, _ = precision_recall_fscore_support(
        is_anomaly, flagged, average="binary", pos_label=True, zero_division=0
    )
    both = is_anomaly.any() and not is_anomaly.all()
    normal = ~is_anomaly
    return {
        "auroc": float(roc_auc_score(is_anomaly, scores)) if both else None,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "false_positive_rate": float(flagged[normal].mean()) if normal.any() else None,
        "threshold": threshold,
        "n_test_normal": int(normal.sum()),
        "n_test_anomaly": int(is_anomaly.sum()),
    }


def train_oneclass(params: Params, data: PreparedData, root: Path = ONECLASS_MODEL_CHECKPOINTS) -> OneClassModel:
    cfg = params.oneclass
    check_variants_fit_data([cfg.variant], data.image_shape, key="oneclass.variant")
    codes, normal = normal_codes(params, data)
    subset = normal_subset(data, codes, "oneclass.normal")
    module = fit_normal(params, subset, root)
    score = score_record(module, subset, cfg.score)
    threshold = float(np.quantile(row_scores(module, subset.val.x, score), 1.0 - cfg.false_positive_rate))
    metrics = holdout_metrics(row_scores(module, data.test.x, score), ~np.isin(data.test.y, codes), threshold)
    metrics.update(normal=normal, variant=cfg.variant, score=cfg.score, n_train_normal=len(subset.train.x))
    return OneClassModel(module, normal, threshold, score, metrics)


def save_oneclass(params: Params, model: OneClassModel, data: PreparedData, folder: Path) -> None:
    """The bundle (weights, preprocessing, normal labels, threshold) and its metrics.json."""
    oneclass = {
        "normal": model.normal,
        "threshold": model.threshold,
        **model.score,
        "target_fpr": params.oneclass.false_positive_rate,
    }
    write_bundle(folder, model.module, data.meta, oneclass=oneclass)
    (folder / "metrics.json").write_text(json.dumps(model.metrics, indent=2, sort_keys=True) + "\n")
