"""The prepare stage on scikit-learn's digits in a scratch project."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from aelab.data.prepared import load_prepared
from aelab.stages.prepare import prepare


def test_prepare_digits_splits_stratified_and_scales_on_train(prepared_digits, tiny_params):
    data = load_prepared(Path("data/prepared"))
    sizes = {k: len(data.split(k).x) for k in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(0.2 * 1797, abs=1)
    assert sizes["val"] == pytest.approx(0.15 * 1797, abs=2)
    for name in ("train", "val", "test"):
        split = data.split(name)
        assert split.x.dtype == np.float32 and split.x.min() >= 0 and split.x.max() <= 1
        counts = np.bincount(split.y, minlength=10) / len(split.y)
        assert counts.min() > 0.08 and counts.max() < 0.12  # stratified: digits classes are ~10% each
    assert data.train.x.max() == 1.0
    assert data.meta["scaling"] == {"kind": "global", "min": [0.0], "scale": [16.0], "clip": True}
    assert data.meta["label_names"] == list(range(10))


def test_prepare_is_deterministic(prepared_digits, tiny_params):
    first = {k: shutil.copyfile(f"data/prepared/{k}.npz", f"{k}.first") for k in ("train", "val", "test")}
    prepare(tiny_params.data, tiny_params.seed)
    for k in first:
        assert Path(f"data/prepared/{k}.npz").read_bytes() == Path(f"{k}.first").read_bytes()
