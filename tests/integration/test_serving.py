"""The model bundle against the pipeline: raw rows in, the codes `reduce` gives the prepared split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import aelab
from aelab.models import build_module
from aelab.reducers import AutoencoderReducer
from aelab.serving.bundle import write_bundle


def test_raw_test_rows_give_the_codes_of_the_pipeline(tiny_params):
    """A bundle written with `prepare`'s meta: raw rows of the test split encode as `reduce` encodes the prepared
    (scaled) test split."""
    from aelab.data.sources import load_source
    from aelab.evaluation.reduction import encode_splits
    from aelab.stages.prepare import prepare, split_dataset

    data = prepare(tiny_params.data, tiny_params.seed)
    raw_test, labels = split_dataset(load_source(tiny_params.data), tiny_params.data, tiny_params.seed)["test"]
    np.testing.assert_array_equal(labels, data.test.y)
    module = build_module(tiny_params, "undercomplete", data.n_features, data.image_shape)
    folder = Path("data/models/undercomplete")
    write_bundle(folder, module, data.meta)
    expected = encode_splits(AutoencoderReducer.load(folder / "model.pt"), data)["test_codes"]
    np.testing.assert_allclose(aelab.load(folder).encode(raw_test), expected, atol=1e-5)
