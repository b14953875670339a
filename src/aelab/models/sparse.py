"""Sparse autoencoder: sigmoid code units pushed towards a mean activation `rho` by a KL penalty (weight `beta`).

The penalty lets the code be larger than the input (overcomplete) and still be useful. The sigmoid code is built in
`networks`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aelab.models.base import AutoencoderModule

_EPS = 1e-6


def kl_sparsity(rho: float, rho_hat: Tensor) -> Tensor:
    """sum_j KL(rho || rho_hat_j) between Bernoulli distributions, for mean activations `rho_hat` in (0, 1)."""
    rho_hat = rho_hat.clamp(_EPS, 1 - _EPS)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


class SparseAutoencoder(AutoencoderModule):
    variant = "sparse"

    def penalties(self, code: Tensor) -> dict[str, Tensor]:
        rho_hat = code.mean(dim=0)
        return {"sparsity": self.hparams.beta * kl_sparsity(self.hparams.rho, rho_hat)}

    def log_code_statistics(self, stage: str, code: Tensor, n: int) -> None:
        self.accumulate(stage, "mean_activation", code.detach().mean(), n)
