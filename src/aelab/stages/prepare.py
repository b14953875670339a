"""`aelab prepare`: load the configured source, split (seeded, stratified), scale on train only, save."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from rich.console import Console
from sklearn.model_selection import train_test_split

from aelab.config import DataConfig, check_variants_fit_data
from aelab.data.prepared import PreparedData, Split, save_prepared
from aelab.data.scaling import Scaler
from aelab.data.sources import RawDataset, load_source
from aelab.paths import PREPARED_DIR


def _stratify(y: np.ndarray | None) -> np.ndarray | None:
    """Stratify when every class has at least two samples; otherwise split at random."""
    if y is None:
        return None
    _, counts = np.unique(y, return_counts=True)
    return y if counts.min() >= 2 else None


def _subset(x: np.ndarray, y: np.ndarray | None, size: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    if size >= len(x):
        return x, y
    index = np.arange(len(x))
    keep, _ = train_test_split(index, train_size=size, random_state=seed, stratify=_stratify(y))
    keep = np.sort(keep)
    return x[keep], None if y is None else y[keep]


def split_dataset(raw: RawDataset, cfg: DataConfig, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """train/val/test: the official test split where the source has one, else `test_fraction` of the data."""
    index = np.arange(len(raw.x))
    if raw.x_test is not None:
        pool, test = index, None
    else:
        pool, test = train_test_split(index, test_size=cfg.test_fraction, random_state=seed, stratify=_stratify(raw.y))
    pool_y = None if raw.y is None else raw.y[pool]
    val_share = cfg.val_fraction / (1 - (0 if test is None else cfg.test_fraction))
    train, val = train_test_split(pool, test_size=val_share, random_state=seed + 1, stratify=_stratify(pool_y))

    def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        idx = np.sort(idx)
        return raw.x[idx], None if raw.y is None else raw.y[idx]

    splits = {"train": take(train), "val": take(val)}
    splits["test"] = take(test) if test is not None else (raw.x_test, raw.y_test)
    if cfg.max_train_samples:
        splits["train"] = _subset(*splits["train"], cfg.max_train_samples, seed + 2)
    return splits


def label_names(raw: RawDataset) -> list | None:
    """The label value of each code: the source's names, or the integer labels themselves (digits, MNIST)."""
    if raw.y is None:
        return None
    if raw.label_names is not None:
        return list(raw.label_names)
    present = np.concatenate([raw.y, raw.y_test if raw.y_test is not None else raw.y[:0]])
    return list(range(int(present.max()) + 1))


def prepare(cfg: DataConfig, seed: int, variants: Iterable[str] = ()) -> PreparedData:
    """Split and scale the source; `variants` (`pipeline.variants`) are checked against the data first."""
    raw = load_source(cfg)
    check_variants_fit_data(variants, raw.image_shape)
    splits = split_dataset(raw, cfg, seed)
    scaler = Scaler.for_data(cfg.scaling, is_image=raw.image_shape is not None).fit(splits["train"][0])
    prepared = {name: Split(scaler.transform(x), y) for name, (x, y) in splits.items()}
    labels = raw.y if raw.y is not None else None
    meta = {
        "source": cfg.source,
        "name": raw.name,
        "n_features": int(raw.x.shape[1]),
        "image_shape": list(raw.image_shape) if raw.image_shape else None,
        "n_classes": int(len(np.unique(labels))) if labels is not None else None,
        "sizes": {name: int(len(split.x)) for name, split in prepared.items()},
        "scaling": scaler.to_dict(),
        "seed": seed,
        "label_names": label_names(raw),
        "feature_names": raw.feature_names,
        "label_column": cfg.label_column if raw.feature_names is not None else None,
    }
    data = PreparedData(**prepared, meta=meta)
    save_prepared(PREPARED_DIR, data)
    return data


def main(params) -> None:
    data = prepare(params.data, params.seed, params.pipeline.variants)
    sizes = ", ".join(f"{k} {v}" for k, v in data.meta["sizes"].items())
    Console(stderr=True).print(f"prepared {data.meta['name']}: {data.n_features} features; {sizes} -> {PREPARED_DIR}")
