"""Undercomplete autoencoder: the bottleneck (code smaller than the input) is the only regulariser.

With `neighbours` it also learns a neighbourhood-preserving code (UMAP's loss, as parametric UMAP adds to an
autoencoder): the data module pairs each training row with one of its nearest input-space neighbours.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import Tensor

from aelab.errors import ConfigError
from aelab.models.base import AutoencoderModule

_EPS = 1e-4


@cache
def umap_curve(min_dist: float, spread: float = 1.0) -> tuple[float, float]:
    """UMAP's (a, b) of the code-space similarity 1 / (1 + a d^(2b)), fitted to its `min_dist` target curve
    (as `umap.umap_.find_ab_params`)."""
    from scipy.optimize import curve_fit

    d = np.linspace(0, spread * 3, 300)
    target = np.where(d < min_dist, 1.0, np.exp(-(d - min_dist) / spread))
    (a, b), _ = curve_fit(lambda x, a, b: 1.0 / (1.0 + a * x ** (2 * b)), d, target)
    return float(a), float(b)


def neighbour_loss(code: Tensor, neighbour_code: Tensor, negatives: int, a: float, b: float) -> Tensor:
    """UMAP's cross-entropy: each (row, neighbour) pair is an edge, each row against `negatives` random rows of the
    batch a non-edge; the mean over all pairs (as parametric UMAP)."""
    n = code.shape[0]
    others = neighbour_code[torch.randint(n, (n * negatives,), device=code.device)]
    rows = code.repeat(negatives, 1)
    d_edge = (code - neighbour_code).pow(2).sum(1)
    d_other = (rows - others).pow(2).sum(1)
    # -log q and -log(1 - q) for q = 1 / (1 + a d^b), d the squared distance, written to stay finite
    attract = torch.log1p(a * (d_edge + _EPS).pow(b))
    q_other = 1.0 / (1.0 + a * (d_other + _EPS).pow(b))
    repel = -torch.log((1.0 - q_other).clamp_min(_EPS))
    return (attract.sum() + repel.sum()) / (n * (1 + negatives))


class UndercompleteAutoencoder(AutoencoderModule):
    variant = "undercomplete"

    def check_dims(self) -> None:
        if self.code_dim >= self.input_dim:
            raise ConfigError(
                f"variants.undercomplete.hidden_dims: code size {self.code_dim} must be smaller than the input size "
                f"{self.input_dim}; for an overcomplete code use the sparse variant"
            )

    def _losses(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        loss, recon, code, terms = super()._losses(batch[:2])
        options = self.hparams.get("neighbours")
        if options is None or len(batch) < 3:  # validation and test batches: reconstruction only
            return loss, recon, code, terms
        a, b = umap_curve(options["min_dist"])
        term = options["weight"] * neighbour_loss(code, self.encode(batch[2]), options["negatives"], a, b)
        return loss + term, recon, code, {**terms, "neighbours": term}
