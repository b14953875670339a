"""The scaling `prepare` fits on the training split and every later use of the data re-applies.

Min-max scaling, fitted on the training split only. `auto` (the default) picks by the kind of data:
- images: one global min and max (pixels share one unit), and values clipped to [0, 1]: a pixel brighter than
  any training pixel is still a pixel, and the BCE loss and the sigmoid output work on [0, 1];
- tables: each column on its own range (a table's columns have unrelated units, so one global range would let
  the largest column crush the others), and values are *not* clipped: a validation, test or new row outside the
  training range keeps its distance from it, which is exactly what an anomaly score must see. The training
  rows lie in [0, 1] by construction, so the default model (sigmoid output) still fits them.
Min-max rather than standardization keeps one model definition (sigmoid output, BCE or MSE loss) for both kinds.
"""

from __future__ import annotations

import numpy as np

KINDS = ("auto", "global", "per_feature")


class Scaler:
    """Min-max scaling to [0, 1] on the training split; `clip` bounds later data to [0, 1] as well."""

    def __init__(self, kind: str, clip: bool = True) -> None:
        self.kind = kind
        self.clip = clip

    @classmethod
    def for_data(cls, kind: str, is_image: bool) -> Scaler:
        """`auto` resolved for the data at hand; images are clipped to [0, 1], tables are not."""
        if kind == "auto":
            kind = "global" if is_image else "per_feature"
        return cls(kind, clip=is_image)

    def fit(self, x: np.ndarray) -> Scaler:
        axis = None if self.kind == "global" else 0
        self.min_ = np.asarray(x.min(axis=axis), dtype=np.float64)
        span = np.asarray(x.max(axis=axis), dtype=np.float64) - self.min_
        self.scale_ = np.where(span > 0, span, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        scaled = (x - self.min_) / self.scale_
        return (np.clip(scaled, 0.0, 1.0) if self.clip else scaled).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "min": np.atleast_1d(self.min_).tolist(),
            "scale": np.atleast_1d(self.scale_).tolist(),
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, state: dict[str, object]) -> Scaler:
        """The scaler `prepare` fitted, from `meta.json`'s `scaling` (applied to new data at inference time).

        Files written before `clip` existed always clipped."""
        scaler = cls(str(state["kind"]), clip=bool(state.get("clip", True)))
        scaler.min_ = np.asarray(state["min"], dtype=np.float64)
        scaler.scale_ = np.asarray(state["scale"], dtype=np.float64)
        if scaler.kind == "global":
            scaler.min_, scaler.scale_ = scaler.min_.reshape(()), scaler.scale_.reshape(())
        return scaler
