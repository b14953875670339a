"""A small table as a user would bring it: 30 numeric measurements and a text label, `benign` being normal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = [f"m{i:02d}" for i in range(30)]


def measurements(n: int = 600, faulty_share: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Benign rows follow 4 latent factors (correlated columns on very different scales); faulty rows break the
    correlation of a few columns. The label column `status` comes second to last, as it may in a real export."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(4, 30))
    units = 10.0 ** rng.integers(-2, 4, size=30)  # columns in unrelated units, 0.01 to 1000
    latent = rng.normal(size=(n, 4))
    x = latent @ loadings + 0.3 * rng.normal(size=(n, 30))
    faulty = rng.random(n) < faulty_share
    broken = rng.choice(30, size=(n, 3))
    for row in np.flatnonzero(faulty):
        x[row, broken[row]] += rng.choice([-1.0, 1.0], size=3) * rng.uniform(1.0, 2.5, size=3)
    frame = pd.DataFrame(x * units + 5 * units, columns=COLUMNS)
    frame.insert(29, "status", np.where(faulty, "faulty", "benign"))
    return frame


def write_measurements(path: Path, **kwargs) -> Path:
    measurements(**kwargs).to_csv(path, index=False)
    return path
