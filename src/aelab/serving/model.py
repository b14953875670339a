"""`aelab.load(path)`: a trained autoencoder applied to raw rows, as a scikit-learn transformer.

The inference itself (`aelab.serving.inference`) needs torch only; this class adds scikit-learn's estimator API
(`clone`, `get_params`, pipelines, `set_output`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from aelab.serving.inference import AutoencoderInference


class AutoencoderModel(TransformerMixin, BaseEstimator, AutoencoderInference):
    """A saved model bundle: `transform` = encode, `inverse_transform` = decode; `fit` only loads the bundle.

    Inputs are raw (unscaled) rows: a numpy array [n, features] (or [n, *image_shape]) or a DataFrame whose columns
    are matched to the training columns by name. `score` is the per-row mean squared reconstruction error in the
    scaled space (the score `evaluate` uses); `predict` (one-class models) is 1 for an anomaly, 0 for normal.
    """

    def transform(self, X: Any) -> np.ndarray:
        # Declared here so that scikit-learn's `set_output` wraps it (it wraps the subclass's own methods only).
        return self.encode(X)


def load(path: str | Path, batch_size: int = 4096) -> AutoencoderModel:
    """The model bundle in `path` (e.g. `data/models/undercomplete`), ready to encode, reconstruct and score."""
    model = AutoencoderModel(path, batch_size=batch_size)
    model.fit()
    return model
