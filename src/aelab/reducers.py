"""Dimensionality reduction with scikit-learn's fit/transform shape, for autoencoders as for PCA.

The pipeline's stages work on the prepared (already scaled) splits, so `AutoencoderReducer` applies a bare
`model.pt` without any scaling. For raw data use a model bundle: `aelab.load("data/models/<name>")`, which is
also a full scikit-learn estimator (`clone`, pipelines). The reducer imports torch only, not scikit-learn: the
`reduce` stage of each variant starts about 1 s sooner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aelab.errors import CheckpointError
from aelab.models.networks import load_networks
from aelab.serving.bundle import Preprocessing
from aelab.serving.inference import AutoencoderInference


class AutoencoderReducer(AutoencoderInference):
    """A trained model file applied to scaled rows: `transform` = encode, `inverse_transform` = decode.

    `fit` only loads the file (the model is trained by `aelab train`).
    """

    @classmethod
    def load(cls, model_file: Path, batch_size: int = 4096) -> AutoencoderReducer:
        return cls(model_file, batch_size=batch_size).fit()

    def fit(self, X: Any = None, y: Any = None) -> AutoencoderReducer:
        if not hasattr(self, "module_"):
            if self.path is None:
                raise CheckpointError("AutoencoderReducer: no model file given")
            module = load_networks(Path(self.path))
            self._setup(module, Preprocessing.identity(module.input_dim))
        return self
