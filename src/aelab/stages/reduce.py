"""`aelab reduce --method NAME`: the lower-dimensional dataset (codes with labels) for one method.

NAME is a trained variant, or `pca` for the classical baseline at the same code size (fitted on train only).
Writes `data/codes/NAME/`: `codes.npz` (train/val/test codes and labels, test reconstructions) and one
CSV or Parquet table per split, ready for users to load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console

from aelab.config import Params
from aelab.data.labels import label_names_of
from aelab.data.prepared import SPLITS, PreparedData, load_prepared
from aelab.evaluation.reduction import encode_splits
from aelab.paths import CODES_DIR, MODELS_DIR, PCA_FILE, PREPARED_DIR


def fit_reducer(params: Params, method: str, data: PreparedData):
    if method == "pca":  # scikit-learn imported here only: a variant's stage starts without it
        from sklearn.decomposition import PCA

        return PCA(n_components=params.pca_components, random_state=params.seed).fit(data.train.x)
    from aelab.reducers import AutoencoderReducer

    return AutoencoderReducer.load(MODELS_DIR / method / "model.pt")


def write_tables(folder: Path, name: str, codes: np.ndarray, labels: np.ndarray | None, formats: list[str]) -> None:
    import pandas as pd

    frame = pd.DataFrame(codes, columns=[f"code_{i}" for i in range(codes.shape[1])])
    if labels is not None:
        frame["label"] = labels
    if "csv" in formats:
        frame.to_csv(folder / f"{name}.csv", index=False, float_format="%.7g")
    if "parquet" in formats:
        frame.to_parquet(folder / f"{name}.parquet", index=False)


def label_values(meta: dict, y: np.ndarray | None) -> np.ndarray | None:
    """The tables carry the label values (`benign`), not their codes; integer labels 0..k-1 are both."""
    if y is None:
        return None
    names = label_names_of(meta, y)
    return y if names == list(range(len(names))) else np.asarray(names, dtype=object)[y]


def reduce(params: Params, method: str, data: PreparedData, out: Path = CODES_DIR) -> Path:
    reducer = fit_reducer(params, method, data)
    folder = out / method
    folder.mkdir(parents=True, exist_ok=True)
    arrays = encode_splits(reducer, data)
    for split in SPLITS:
        labels = label_values(data.meta, data.split(split).y)
        write_tables(folder, split, arrays[f"{split}_codes"], labels, params.reduce.formats)
    np.savez(folder / "codes.npz", **arrays)
    info = {"method": method, "code_dim": int(arrays["train_codes"].shape[1]), "n_features": data.n_features}
    if method == "pca":
        info["explained_variance"] = float(reducer.explained_variance_ratio_.sum())
        from aelab.evaluation.pca_io import save_pca

        save_pca(reducer, folder / PCA_FILE)  # the fitted PCA, for evaluate's denoising baseline
    (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def main(params: Params, method: str) -> None:
    folder = reduce(params, method, load_prepared(PREPARED_DIR))
    Console(stderr=True).print(f"reduced with {method} -> {folder}")
