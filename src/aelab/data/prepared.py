"""The prepared dataset on disk (`data/prepared/`): scaled splits as `.npz` plus `meta.json`.

This is the contract between `prepare` and every later stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aelab.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    """float32 [n, features], scaled: the training rows to [0, 1] (tables: later rows may leave it)."""
    y: np.ndarray | None
    """int64 [n] labels, or None for unlabelled data."""


@dataclass(frozen=True)
class PreparedData:
    train: Split
    val: Split
    test: Split
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        shape = self.meta.get("image_shape")
        return tuple(shape) if shape else None

    def split(self, name: str) -> Split:
        return getattr(self, name)


def save_prepared(folder: Path, data: PreparedData) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        split = data.split(name)
        arrays = {"x": split.x} if split.y is None else {"x": split.x, "y": split.y}
        np.savez(folder / f"{name}.npz", **arrays)
    (folder / "meta.json").write_text(json.dumps(data.meta, indent=2, sort_keys=True) + "\n")


def load_prepared(folder: Path) -> PreparedData:
    meta_file = folder / "meta.json"
    if not meta_file.exists():
        raise DataError(f"{meta_file}: not found; run `aelab prepare` (or `dvc repro prepare`) first")
    splits = {}
    for name in SPLITS:
        path = folder / f"{name}.npz"
        try:
            with np.load(path, allow_pickle=False) as archive:
                splits[name] = Split(archive["x"], archive.get("y", None))
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"{path}: cannot read prepared split ({err}); run `aelab prepare` again") from None
    return PreparedData(**splits, meta=json.loads(meta_file.read_text()))
