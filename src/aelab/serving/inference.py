"""A trained autoencoder applied to rows with torch alone: the inference core of `aelab.load` and the pipeline.

Inference calls the plain `nn.Module`s (scaling, encoder, decoder) under `torch.inference_mode()`: no Trainer,
so one row is scored in microseconds, and Lightning is not even imported (it costs seconds per process; the model
is rebuilt by `aelab.models.networks`). The scaling fitted by `prepare` runs inside the graph as float32 tensor ops
(`InputScaling`, checked against `Scaler.transform` by the tests), which is also what ONNX export saves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aelab.data.scaling import Scaler
from aelab.errors import CheckpointError, DataError
from aelab.models.networks import Autoencoder
from aelab.serving.bundle import Preprocessing, read_bundle
from aelab.serving.io import feature_matrix


class InputScaling(nn.Module):
    """`Scaler.transform` as tensor ops; the identity for inputs that are scaled already."""

    def __init__(self, scaler: Scaler | None, n_features: int) -> None:
        super().__init__()
        self.active = scaler is not None
        self.clip = bool(getattr(scaler, "clip", True))
        low = np.broadcast_to(scaler.min_, (n_features,)) if scaler is not None else np.zeros(n_features)
        span = np.broadcast_to(scaler.scale_, (n_features,)) if scaler is not None else np.ones(n_features)
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("span", torch.tensor(span, dtype=torch.float32))
        # x * (1 / span) - low / span: one fused pass over the rows instead of a subtraction and a division.
        self.register_buffer("inv_span", torch.tensor(1.0 / span, dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(-low / span, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        scaled = torch.addcmul(self.shift, x, self.inv_span)
        return scaled.clamp_(0.0, 1.0) if self.clip else scaled

    def inverse(self, scaled: Tensor) -> Tensor:
        return scaled * self.span + self.low if self.active else scaled


class ScaledEncoder(nn.Module):
    """Raw rows -> codes: the graph that `aelab export` writes."""

    def __init__(self, scaling: InputScaling, encoder: nn.Module) -> None:
        super().__init__()
        self.scaling = scaling
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(self.scaling(x))


class RowScore(nn.Module):
    """A row's anomaly score from its scaled values, its reconstruction and its code, as `oneclass.json` says.

    mse: the mean squared reconstruction error; standardized: each feature's squared error weighted by `weights`;
    combined: the mse plus the code's squared Mahalanobis distance from the normal training codes (`code_location`,
    `code_precision`), each over its median on the normal validation rows (`medians`), as DAGMM reads a density of
    the codes beside the reconstruction error.
    """

    def __init__(self, oneclass: dict[str, Any] | None) -> None:
        super().__init__()
        oneclass = oneclass or {"score": "mse"}
        self.combined = oneclass["score"] == "combined"
        weights = oneclass.get("weights") if oneclass["score"] == "standardized" else None
        self.register_buffer("weights", None if weights is None else torch.tensor(weights, dtype=torch.float32))
        if self.combined:
            self.register_buffer("location", torch.tensor(oneclass["code_location"], dtype=torch.float32))
            self.register_buffer("precision", torch.tensor(oneclass["code_precision"], dtype=torch.float32))
            self.register_buffer("medians", torch.tensor(oneclass["medians"], dtype=torch.float32))

    def error(self, scaled: Tensor, reconstruction: Tensor) -> Tensor:
        """The (weighted) mean squared reconstruction error of each row."""
        squared = (reconstruction - scaled).square_()
        if self.weights is not None:
            squared.mul_(self.weights)
        return squared.mean(dim=1)

    def distance(self, code: Tensor) -> Tensor:
        """The code's squared Mahalanobis distance from the normal training codes (combined score only)."""
        centred = code - self.location
        return ((centred @ self.precision) * centred).sum(dim=1)

    def forward(self, scaled: Tensor, reconstruction: Tensor, code: Tensor) -> Tensor:
        error = self.error(scaled, reconstruction)
        if not self.combined:
            return error
        return error / self.medians[0] + self.distance(code) / self.medians[1]


class AutoencoderInference:
    """A saved model bundle: `transform` = encode, `inverse_transform` = decode; `fit` only loads the bundle.

    Inputs are raw (unscaled) rows: a numpy array [n, features] (or [n, *image_shape]) or a DataFrame whose columns
    are matched to the training columns by name. `score` is the per-row mean squared reconstruction error in the
    scaled space (the score `evaluate` uses); `predict` (one-class models) is 1 for an anomaly, 0 for normal.
    Without scikit-learn (about 1 s to import): `AutoencoderModel` adds its estimator API.
    """

    def __init__(self, path: str | Path | None = None, batch_size: int = 4096) -> None:
        self.path = path
        self.batch_size = batch_size

    # ---- loading --------------------------------------------------------------------------------------------------
    @classmethod
    def of(
        cls, module: Autoencoder, preprocessing: Preprocessing | None = None, oneclass: dict[str, Any] | None = None
    ) -> AutoencoderInference:
        """A model in memory, not a bundle (e.g. one-class scores before the bundle is written); scaled rows unless
        `preprocessing` says otherwise."""
        inference = cls()
        inference._setup(module, preprocessing or Preprocessing.identity(module.input_dim), oneclass)
        return inference

    def fit(self, X: Any = None, y: Any = None) -> AutoencoderInference:
        """Load the bundle (once): the model is trained already, so X is not used."""
        if not hasattr(self, "module_"):
            if self.path is None:
                raise CheckpointError(f"{type(self).__name__}: no bundle path given; use aelab.load(path)")
            bundle = read_bundle(Path(self.path))
            self._setup(bundle.module, bundle.preprocessing, bundle.oneclass, bundle.info)
        return self

    def _setup(
        self,
        module: Autoencoder,
        preprocessing: Preprocessing,
        oneclass: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.module_ = module.eval()
        self.preprocessing_ = preprocessing
        self.oneclass_ = oneclass
        self.info_ = info or {"variant": module.variant}
        self.n_features_in_ = preprocessing.n_features
        if preprocessing.feature_names is not None:
            self.feature_names_in_ = np.asarray(preprocessing.feature_names, dtype=object)
        self.scaling_ = InputScaling(preprocessing.scaler(), preprocessing.n_features).eval()
        self.encoder_ = ScaledEncoder(self.scaling_, module.encoder).eval()
        self.row_score_ = RowScore(oneclass).eval()

    def _loaded(self) -> AutoencoderInference:
        return self if hasattr(self, "module_") else self.fit()

    # ---- what the model is ----------------------------------------------------------------------------------------
    @property
    def code_dim(self) -> int:
        return int(self._loaded().module_.code_dim)

    @property
    def variant(self) -> str:
        return str(self._loaded().module_.variant)

    @property
    def threshold(self) -> float | None:
        """The one-class decision threshold on `score` (None for a model without one)."""
        oneclass = self._loaded().oneclass_
        return float(oneclass["threshold"]) if oneclass else None

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([f"code_{i}" for i in range(self.code_dim)], dtype=object)

    # ---- inference on checked float32 rows ------------------------------------------------------------------------
    def _forward(self, output: str, x: Tensor) -> Tensor:
        if output == "codes":
            return self.encoder_(x)
        scaled = self.scaling_(x)
        code = self.module_.encoder(scaled)
        recon = self.module_.decoder(code).sigmoid()
        if output == "reconstruction":
            return self.scaling_.inverse(recon)
        if output == "score_parts":  # the combined score's two parts, before each is divided by its median
            return torch.stack([self.row_score_.error(scaled, recon), self.row_score_.distance(code)], dim=1)
        return self.row_score_(scaled, recon, code)

    def compute(self, output: str, x: np.ndarray) -> np.ndarray:
        """`output` (codes | reconstruction | score | score_parts) of float32 rows [n, features], checked finite."""
        self._loaded()
        if not x.flags.writeable:  # torch refuses read-only memory (a memory-mapped .npy, a broadcast view)
            x = x.copy()
        with torch.inference_mode():
            if len(x) <= self.batch_size:
                return self._forward(output, torch.from_numpy(x)).numpy()
            parts = [
                self._forward(output, torch.from_numpy(x[start : start + self.batch_size])).numpy()
                for start in range(0, len(x), self.batch_size)
            ]
        return np.concatenate(parts)

    def _rows(self, X: Any) -> np.ndarray:
        return feature_matrix(X, self._loaded().preprocessing_)

    # ---- the public API -------------------------------------------------------------------------------------------
    def encode(self, X: Any) -> np.ndarray:
        """Codes [n, code_dim] of raw rows."""
        return self.compute("codes", self._rows(X))

    def reconstruct(self, X: Any) -> np.ndarray:
        """Reconstructions [n, features] of raw rows, in the raw (unscaled) space."""
        return self.compute("reconstruction", self._rows(X))

    def score(self, X: Any, y: Any = None) -> np.ndarray:
        """Anomaly score per row: mean squared reconstruction error in the scaled space (higher: more unusual).

        A one-class model scores as its `oneclass.json` says (`RowScore`): with the `standardized` score each
        feature's squared error is weighted, with `combined` the code's distance from the normal codes is added.
        """
        return self.compute("score", self._rows(X))

    decision_function = score

    def predict(self, X: Any) -> np.ndarray:
        """1 for an anomaly (score above the stored threshold), 0 for normal, as in PyOD."""
        if self.threshold is None:
            raise CheckpointError(
                f"{self.path or 'this model'}: not a one-class model (no oneclass.json), so there is no threshold "
                "to predict with; use score(X)"
            )
        return (self.score(X) > self.threshold).astype(np.int64)

    def transform(self, X: Any) -> np.ndarray:
        return self.encode(X)

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Decode codes [n, code_dim] to rows in the raw space."""
        z = np.asarray(Z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.code_dim:
            raise DataError(f"Z: expected codes of shape [rows, {self.code_dim}], got {z.shape}")
        with torch.inference_mode():
            return self.scaling_.inverse(self.module_.decode(torch.from_numpy(np.ascontiguousarray(z)))).numpy()
