"""The scaling `prepare` fits on the training split and every later use of the data re-applies."""

from __future__ import annotations

import numpy as np


class Scaler:
    """Min-max scaling to [0, 1], fitted on the training split only; unseen values are clipped."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def fit(self, x: np.ndarray) -> Scaler:
        axis = None if self.kind == "global" else 0
        self.min_ = np.asarray(x.min(axis=axis), dtype=np.float64)
        span = np.asarray(x.max(axis=axis), dtype=np.float64) - self.min_
        self.scale_ = np.where(span > 0, span, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.min_) / self.scale_, 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "min": np.atleast_1d(self.min_).tolist(),
            "scale": np.atleast_1d(self.scale_).tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, object]) -> Scaler:
        """The scaler `prepare` fitted, from `meta.json`'s `scaling` (applied to new data at inference time)."""
        scaler = cls(str(state["kind"]))
        scaler.min_ = np.asarray(state["min"], dtype=np.float64)
        scaler.scale_ = np.asarray(state["scale"], dtype=np.float64)
        if scaler.kind == "global":
            scaler.min_, scaler.scale_ = scaler.min_.reshape(()), scaler.scale_.reshape(())
        return scaler
