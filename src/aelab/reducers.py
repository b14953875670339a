"""Dimensionality reduction with scikit-learn's fit/transform shape, for autoencoders as for PCA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from aelab.models import load_model


class AutoencoderReducer(TransformerMixin, BaseEstimator):
    """Codes from a trained autoencoder's encoder; `inverse_transform` decodes them.

    Made from the model that `train` saved, with `AutoencoderReducer.load`; `fit` leaves it as it is.
    """

    def __init__(self, variant: str = "undercomplete", params=None, batch_size: int = 4096) -> None:
        self.variant = variant
        self.params = params
        self.batch_size = batch_size

    @classmethod
    def load(cls, model_file: Path, batch_size: int = 4096) -> AutoencoderReducer:
        module = load_model(model_file)
        reducer = cls(variant=module.variant, batch_size=batch_size)
        reducer.module_ = module
        reducer.n_features_in_ = module.input_dim
        return reducer

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> AutoencoderReducer:
        """A loaded model is already fitted (scikit-learn's `Pipeline` calls `fit` anyway)."""
        return self

    def _apply(self, fn, X: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(X), self.batch_size):
                out.append(fn(torch.as_tensor(np.asarray(X[start : start + self.batch_size], dtype=np.float32))))
        return torch.cat(out).numpy() if out else np.empty((0, 0), dtype=np.float32)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self._apply(self.module_.encode, X)

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        return self._apply(self.module_.decode, Z)

    def reconstruct(self, X: np.ndarray) -> np.ndarray:
        return self._apply(self.module_.forward, X)
