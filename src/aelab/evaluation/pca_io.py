"""A fitted PCA as plain arrays (`pca.npz`), never as a pickle.

`data/codes/pca/` is a DVC output, so a shared cache or remote can supply it: a pickled estimator there would be
code run by `evaluate`. Arrays and a JSON string of the constructor settings carry everything a fitted
scikit-learn PCA needs for `transform` and `inverse_transform`, and load with `allow_pickle=False`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from aelab.errors import DataError

ARRAYS = ("components_", "mean_", "explained_variance_", "explained_variance_ratio_", "singular_values_")
"""The fitted arrays, saved as they are."""
SCALARS = ("n_components_", "n_features_in_", "n_samples_", "noise_variance_")
"""The fitted numbers, saved as 0-d arrays."""


def save_pca(pca: PCA, path: Path) -> None:
    """Write the fitted arrays and the constructor settings (as JSON text) to `path`."""
    settings = {k: v for k, v in pca.get_params().items() if isinstance(v, str | int | float | bool | type(None))}
    arrays = {name: np.asarray(getattr(pca, name)) for name in ARRAYS + SCALARS}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(handle, settings=np.array(json.dumps(settings, sort_keys=True)), **arrays)


def load_pca(path: Path) -> PCA:
    """A fitted PCA rebuilt from `save_pca`'s arrays; a missing, truncated or foreign file is a `DataError`."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("settings", *ARRAYS, *SCALARS) if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: not a saved PCA (missing {', '.join(missing)}); run `aelab reduce --method pca`"
                )
            values = {k: archive[k] for k in ARRAYS + SCALARS}
            pca = PCA(**json.loads(str(archive["settings"])))
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read the saved PCA ({err}); run `aelab reduce --method pca` again") from None
    for name in ARRAYS:
        setattr(pca, name, values[name])
    for name in ("n_components_", "n_features_in_", "n_samples_"):
        setattr(pca, name, int(values[name]))
    pca.noise_variance_ = float(values["noise_variance_"])
    return pca
