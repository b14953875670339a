"""Classification on codes: a linear probe and k-nearest-neighbours, per-class accuracy, confusion matrices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, recall_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aelab.config import EvaluateConfig


@dataclass
class ProbeResult:
    metrics: dict[str, float]
    per_class_accuracy: dict[int, float]
    predictions: np.ndarray


def linear_probe(cfg: EvaluateConfig, seed: int, train_x, train_y, test_x) -> np.ndarray:
    """Test predictions of a logistic regression on standardised features (fitted on train only)."""
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=cfg.probe_c, max_iter=cfg.probe_max_iter, random_state=seed)
    )
    return probe.fit(train_x, train_y).predict(test_x)


def knn_predictions(n_neighbors: int, train_x, train_y, test_x) -> np.ndarray:
    """k-nearest-neighbours in the code space as it is (Euclidean): how well the code's geometry groups classes."""
    return KNeighborsClassifier(n_neighbors=n_neighbors).fit(train_x, train_y).predict(test_x)


def knn_accuracy(n_neighbors: int, train_x, train_y, x, y) -> float:
    """Accuracy of k-NN on (x, y) with the training rows as neighbours: on the validation split, what settings
    that shape the code space (a neighbourhood loss, its weight) are chosen on, so that test chooses nothing."""
    return float(accuracy_score(y, knn_predictions(n_neighbors, train_x, train_y, x)))


def classify(cfg: EvaluateConfig, seed: int, train_x, train_y, test_x, test_y) -> ProbeResult:
    probe = linear_probe(cfg, seed, train_x, train_y, test_x)
    classes = np.unique(np.concatenate([train_y, test_y]))
    per_class = recall_score(test_y, probe, labels=classes, average=None, zero_division=0)
    return ProbeResult(
        metrics={
            "probe_accuracy": float(accuracy_score(test_y, probe)),
            "knn_accuracy": knn_accuracy(cfg.knn_neighbors, train_x, train_y, test_x, test_y),
        },
        per_class_accuracy={int(c): float(a) for c, a in zip(classes, per_class, strict=True)},
        predictions=probe,
    )


def confusion_figure(test_y: np.ndarray, predictions: np.ndarray, title: str) -> Figure:
    display = ConfusionMatrixDisplay.from_predictions(test_y, predictions, normalize="true", values_format=".2f")
    size = 4 + 0.35 * len(np.unique(test_y))
    display.figure_.set_size_inches(size, size)
    display.ax_.set_title(title)
    display.figure_.tight_layout()
    return display.figure_
